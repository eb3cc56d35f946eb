//! Reads: documents by id, lists (their SQL, counts and stamps), relations and load balancer
//! graphs, on the reader pool or inside a [`crate::WriteTx`].

use klb_model::{ProvisioningStatus, Resource};
use sqlx::{Any, Executor, Row};
use tracing::debug;
use uuid::Uuid;

use crate::StoreError;
use crate::document::{Document, ListQuery, Relation, Stamp};
use crate::error::query;
use crate::kind::DocumentKind;
use crate::store::Store;

impl Store {
    /// One document by kind and id (`DELETED` rows included; callers decide).
    pub async fn get(
        &self,
        kind: impl Into<DocumentKind>,
        id: &str,
    ) -> Result<Option<Document>, StoreError> {
        let sql = format!(
            "SELECT {} FROM resources WHERE kind = $1 AND id = $2",
            Document::COLUMNS
        );
        let row = sqlx::query(&sql)
            .bind(kind.into().as_str())
            .bind(id)
            .fetch_optional(&self.inner.reader)
            .await
            .map_err(query("get"))?;
        row.map(|r| Document::from_row(&r))
            .transpose()
            .map_err(query("get"))
    }

    /// One model resource by id; `None` when absent or `DELETED`.
    pub async fn get_resource<T: Resource>(&self, id: Uuid) -> Result<Option<T>, StoreError> {
        match self.get(T::KIND, &id.to_string()).await? {
            Some(doc) if doc.status() != Some(ProvisioningStatus::Deleted) => {
                Ok(Some(doc.decode()?))
            }
            _ => Ok(None),
        }
    }

    /// Documents matching `q`, ordered by `(created_at, id)`.
    pub async fn list(&self, q: &ListQuery) -> Result<Vec<Document>, StoreError> {
        list_on(&self.inner.reader, q).await
    }

    /// Number of documents matching `q` (ignores `after`, `descending` and `limit`), read
    /// outside any transaction ([`WriteTx::count`] is the exact one under concurrent writes).
    pub async fn count(&self, q: &ListQuery) -> Result<i64, StoreError> {
        count_on(&self.inner.reader, q).await
    }

    /// The stamps of the documents [`Store::list`] would return for `q`, in the same order,
    /// without their bodies: with [`Store::render_cache`] a list reads bodies
    /// ([`Store::get_many`]) only of documents changed since they were last rendered.
    pub async fn list_stamps(&self, q: &ListQuery) -> Result<Vec<Stamp>, StoreError> {
        if let Some(stamps) = self.list_stamps_joined(q).await? {
            return Ok(stamps);
        }
        debug!(kind = ?q.kind, "stamps not splittable, listing them row by row");
        let (sql, binds) = list_sql("id, created_at, version", q);
        let mut stmt = sqlx::query(&sql);
        for b in &binds {
            stmt = stmt.bind(b.as_str());
        }
        let rows = stmt
            .fetch_all(&self.inner.reader)
            .await
            .map_err(query("list stamps"))?;
        rows.iter()
            .map(|r| {
                Ok(Stamp {
                    id: r.try_get(0)?,
                    created_at: r.try_get(1)?,
                    version: r.try_get(2)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(query("list stamps"))
    }

    /// [`Store::list_stamps`] as one aggregated row instead of a row per document: both
    /// drivers pay per row (on SQLite a channel message from the connection's thread and a
    /// copy of every value), which was most of the cost of a 200-object list. Records are
    /// `created_at US version US id`, separated by RS (ASCII unit/record separators); `None`
    /// when an id contains a separator (the record count then does not match).
    pub(crate) async fn list_stamps_joined(
        &self,
        q: &ListQuery,
    ) -> Result<Option<Vec<Stamp>>, StoreError> {
        let (inner, mut binds) = list_sql("id, created_at, version", q);
        let dir = if q.descending { "DESC" } else { "ASC" };
        binds.push(UNIT_SEP.to_owned());
        let us = binds.len();
        binds.push(RECORD_SEP.to_owned());
        let rs = binds.len();
        // string_agg with ORDER BY: PostgreSQL, and SQLite since 3.44 (sqlx bundles 3.46).
        let sql = format!(
            "SELECT COUNT(*), string_agg(created_at || CAST(${us} AS TEXT) || CAST(version AS TEXT) || CAST(${us} AS TEXT) || id, \
             CAST(${rs} AS TEXT) ORDER BY created_at {dir}, id {dir}) FROM ({inner}) page"
        );
        let mut stmt = sqlx::query(&sql);
        for b in &binds {
            stmt = stmt.bind(b.as_str());
        }
        let row = stmt
            .fetch_one(&self.inner.reader)
            .await
            .map_err(query("list stamps"))?;
        let count: i64 = row.try_get(0).map_err(query("list stamps"))?;
        let joined: Option<String> = row.try_get(1).map_err(query("list stamps"))?;
        Ok(parse_stamps(joined.as_deref().unwrap_or(""), count))
    }

    /// Documents of `kind` with the given ids (`DELETED` ones included), in no particular
    /// order; absent ids are skipped.
    pub async fn get_many(
        &self,
        kind: impl Into<DocumentKind>,
        ids: &[String],
    ) -> Result<Vec<Document>, StoreError> {
        let kind = kind.into().as_str();
        let mut docs = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(500) {
            let sql = format!(
                "SELECT {} FROM resources WHERE kind = $1 AND id IN ({})",
                Document::COLUMNS,
                placeholders(2, chunk.len())
            );
            let mut stmt = sqlx::query(&sql).bind(kind);
            for id in chunk {
                stmt = stmt.bind(id.as_str());
            }
            let rows = stmt
                .fetch_all(&self.inner.reader)
                .await
                .map_err(query("get many"))?;
            for r in &rows {
                docs.push(Document::from_row(r).map_err(query("get many"))?);
            }
        }
        Ok(docs)
    }

    /// Relation rows of every document whose `parent_id` or `ref_id` is one of `ids`
    /// (excluding `DELETED`). One query for a whole page of parents.
    pub async fn relations(&self, ids: &[String]) -> Result<Vec<Relation>, StoreError> {
        relations_on(&self.inner.reader, ids, true).await
    }

    /// Like [`Store::relations`] but only children (`parent_id` in `ids`): one index lookup
    /// per id, for kinds nothing refers to by `ref_id`.
    pub async fn children(&self, ids: &[String]) -> Result<Vec<Relation>, StoreError> {
        relations_on(&self.inner.reader, ids, false).await
    }

    /// Every live document of a load balancer's graph (the LB itself included).
    pub async fn graph(&self, loadbalancer_id: &str) -> Result<Vec<Document>, StoreError> {
        let q = ListQuery {
            loadbalancer_id: Some(loadbalancer_id.to_owned()),
            ..Default::default()
        };
        list_on(&self.inner.reader, &q).await
    }

    /// Every live document of the load balancer graph that document `(kind, id)` belongs to
    /// (the LB itself included), in one query: what a change of one object reads to check it
    /// against its LB, parent and siblings. Empty when `(kind, id)` does not exist.
    pub async fn graph_of(
        &self,
        kind: impl Into<DocumentKind>,
        id: &str,
    ) -> Result<Vec<Document>, StoreError> {
        let sql = format!(
            "SELECT {} FROM resources WHERE loadbalancer_id = \
             (SELECT loadbalancer_id FROM resources WHERE kind = $1 AND id = $2) \
             AND (provisioning_status IS NULL OR provisioning_status <> 'DELETED') \
             ORDER BY created_at, id",
            Document::COLUMNS
        );
        let rows = sqlx::query(&sql)
            .bind(kind.into().as_str())
            .bind(id)
            .fetch_all(&self.inner.reader)
            .await
            .map_err(query("graph of"))?;
        rows.iter()
            .map(Document::from_row)
            .collect::<Result<_, _>>()
            .map_err(query("graph of"))
    }
}

pub(crate) fn placeholders(start: usize, n: usize) -> String {
    (start..start + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) async fn list_on<'e, E>(exec: E, q: &ListQuery) -> Result<Vec<Document>, StoreError>
where
    E: Executor<'e, Database = Any>,
{
    let (sql, binds) = list_sql(Document::COLUMNS, q);
    let mut stmt = sqlx::query(&sql);
    for b in &binds {
        stmt = stmt.bind(b.as_str());
    }
    let rows = stmt.fetch_all(exec).await.map_err(query("list"))?;
    rows.iter()
        .map(Document::from_row)
        .collect::<Result<_, _>>()
        .map_err(query("list"))
}

pub(crate) async fn count_on<'e, E>(exec: E, q: &ListQuery) -> Result<i64, StoreError>
where
    E: Executor<'e, Database = Any>,
{
    let mut sql = String::from("SELECT COUNT(*) FROM resources WHERE kind = $1");
    // A count is always of one kind (quota checks); `None` counts nothing.
    let Some(kind) = q.kind else {
        return Ok(0);
    };
    let mut binds: Vec<&str> = vec![kind.as_str()];
    for (col, v) in [
        ("project_id", &q.project_id),
        ("loadbalancer_id", &q.loadbalancer_id),
        ("parent_id", &q.parent_id),
        ("ref_id", &q.ref_id),
    ] {
        if let Some(v) = v {
            binds.push(v.as_str());
            sql.push_str(&format!(" AND {col} = ${}", binds.len()));
        }
    }
    if !q.include_deleted {
        sql.push_str(" AND (provisioning_status IS NULL OR provisioning_status <> 'DELETED')");
    }
    let mut stmt = sqlx::query_scalar::<_, i64>(&sql);
    for b in binds {
        stmt = stmt.bind(b);
    }
    stmt.fetch_one(exec).await.map_err(query("count"))
}

/// Separators of [`Store::list_stamps`]'s aggregated row (never in timestamps or numbers).
const UNIT_SEP: &str = "\u{1f}";
const RECORD_SEP: &str = "\u{1e}";

/// Splits [`Store::list_stamps`]'s aggregated row; `None` unless it holds exactly `count`
/// well-formed records.
fn parse_stamps(joined: &str, count: i64) -> Option<Vec<Stamp>> {
    if count == 0 {
        return joined.is_empty().then(Vec::new);
    }
    let stamps = joined
        .split(RECORD_SEP)
        .map(|rec| {
            let mut parts = rec.splitn(3, UNIT_SEP);
            let created_at = parts.next()?;
            let version = parts.next()?.parse().ok()?;
            let id = parts.next()?;
            if id.contains(UNIT_SEP) {
                return None;
            }
            Some(Stamp {
                id: id.to_owned(),
                created_at: created_at.to_owned(),
                version,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    (stamps.len() as i64 == count).then_some(stamps)
}

/// The SELECT of a list query (`columns` of the matching rows, in list order) and its binds.
fn list_sql(columns: &str, q: &ListQuery) -> (String, Vec<String>) {
    let mut sql = format!("SELECT {columns} FROM resources WHERE 1 = 1");
    let mut binds: Vec<String> = Vec::new();
    let mut cond = |sql: &mut String, col: &str, v: &str| {
        binds.push(v.to_owned());
        sql.push_str(&format!(" AND {col} = ${}", binds.len()));
    };
    if let Some(kind) = q.kind {
        cond(&mut sql, "kind", kind.as_str());
    }
    if let Some(v) = &q.project_id {
        cond(&mut sql, "project_id", v);
    }
    if let Some(v) = &q.loadbalancer_id {
        cond(&mut sql, "loadbalancer_id", v);
    }
    if let Some(v) = &q.parent_id {
        cond(&mut sql, "parent_id", v);
    }
    if let Some(v) = &q.ref_id {
        cond(&mut sql, "ref_id", v);
    }
    if !q.include_deleted {
        sql.push_str(" AND (provisioning_status IS NULL OR provisioning_status <> 'DELETED')");
    }
    let (cmp, dir) = if q.descending {
        ("<", "DESC")
    } else {
        (">", "ASC")
    };
    if let Some((created, id)) = &q.after {
        binds.push(created.clone());
        let c = binds.len();
        binds.push(id.clone());
        let i = binds.len();
        sql.push_str(&format!(
            " AND (created_at {cmp} ${c} OR (created_at = ${c} AND id {cmp} ${i}))"
        ));
    }
    sql.push_str(&format!(" ORDER BY created_at {dir}, id {dir}"));
    if let Some(limit) = q.limit {
        sql.push_str(&format!(" LIMIT {}", limit.max(0)));
    }
    (sql, binds)
}

pub(crate) async fn relations_on<'e, E>(
    exec: E,
    ids: &[String],
    with_refs: bool,
) -> Result<Vec<Relation>, StoreError>
where
    E: Executor<'e, Database = Any>,
{
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let p = placeholders(1, ids.len());
    let cond = if with_refs {
        format!("(parent_id IN ({p}) OR ref_id IN ({p}))")
    } else {
        format!("parent_id IN ({p})")
    };
    let sql = format!(
        "SELECT kind, id, parent_id, ref_id, position FROM resources \
         WHERE {cond} \
         AND (provisioning_status IS NULL OR provisioning_status <> 'DELETED') \
         ORDER BY created_at, id"
    );
    let mut stmt = sqlx::query(&sql);
    for id in ids {
        stmt = stmt.bind(id.as_str());
    }
    let rows = stmt.fetch_all(exec).await.map_err(query("relations"))?;
    rows.iter()
        .map(Relation::from_row)
        .collect::<Result<_, _>>()
        .map_err(query("relations"))
}
