//! Write transactions: versioned document writes inside one database transaction.

use std::sync::Arc;

use klb_model::{ProvisioningStatus, Resource};
use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::{Any, Transaction};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::StoreError;
use crate::document::{Document, ListQuery, Relation};
use crate::error::query;
use crate::kind::DocumentKind;
use crate::query::{count_on, list_on, relations_on};
use crate::store::Backend;

/// A write transaction. Dropping it without [`WriteTx::commit`] rolls back.
pub struct WriteTx {
    pub(crate) tx: Transaction<'static, Any>,
    pub(crate) backend: Backend,
    pub(crate) jobs_ready: Arc<Notify>,
    pub(crate) job_written: bool,
}

impl WriteTx {
    /// Commits; wakes job workers if a job was enqueued.
    pub async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await.map_err(query("commit"))?;
        if self.job_written {
            self.jobs_ready.notify_one();
        }
        Ok(())
    }

    /// Reads a document and, on PostgreSQL, locks its row until the transaction ends (SQLite
    /// needs no row lock: this transaction is the only writer).
    pub async fn get_for_update(
        &mut self,
        kind: impl Into<DocumentKind>,
        id: &str,
    ) -> Result<Option<Document>, StoreError> {
        let lock = match self.backend {
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "SELECT {} FROM resources WHERE kind = $1 AND id = $2{lock}",
            Document::COLUMNS
        );
        let row = sqlx::query(&sql)
            .bind(kind.into().as_str())
            .bind(id)
            .fetch_optional(&mut *self.tx)
            .await
            .map_err(query("get for update"))?;
        row.map(|r| Document::from_row(&r))
            .transpose()
            .map_err(query("get for update"))
    }

    /// [`WriteTx::get_for_update`] decoded as a model resource; `None` if absent or DELETED.
    pub async fn get_resource<T: Resource>(&mut self, id: Uuid) -> Result<Option<T>, StoreError> {
        match self.get_for_update(T::KIND, &id.to_string()).await? {
            Some(doc) if doc.status() != Some(ProvisioningStatus::Deleted) => {
                Ok(Some(doc.decode()?))
            }
            _ => Ok(None),
        }
    }

    /// Lists inside the transaction (sees its own writes).
    pub async fn list(&mut self, q: &ListQuery) -> Result<Vec<Document>, StoreError> {
        list_on(&mut *self.tx, q).await
    }

    /// Lists model resources inside the transaction.
    pub async fn list_resources<T: Resource>(
        &mut self,
        mut q: ListQuery,
    ) -> Result<Vec<T>, StoreError> {
        q.kind = Some(T::KIND.into());
        self.list(&q).await?.iter().map(Document::decode).collect()
    }

    /// Number of documents matching `q` (ignores `after`, `descending` and `limit`); used for
    /// quota checks inside the writer's transaction.
    pub async fn count(&mut self, q: &ListQuery) -> Result<i64, StoreError> {
        count_on(&mut *self.tx, q).await
    }

    /// Relation rows inside the transaction.
    pub async fn relations(&mut self, ids: &[String]) -> Result<Vec<Relation>, StoreError> {
        relations_on(&mut *self.tx, ids, true).await
    }

    /// Inserts a new document (`Duplicate` if `(kind, id)` exists).
    pub async fn insert(&mut self, doc: &Document) -> Result<(), StoreError> {
        let res = bind_doc(sqlx::query(
            "INSERT INTO resources (kind, id, project_id, loadbalancer_id, parent_id, ref_id, position, provisioning_status, created_at, version, body) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        ), doc)
        .execute(&mut *self.tx)
        .await;
        match res {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_database_error()
                    .is_some_and(|d| d.is_unique_violation()) =>
            {
                Err(StoreError::Duplicate {
                    kind: doc.kind,
                    id: doc.id.clone(),
                })
            }
            Err(e) => Err(query("insert")(e)),
        }
    }

    /// Replaces a document if its stored version is still `doc.version`; the stored version
    /// becomes `doc.version + 1` (and so does `doc.version`).
    pub async fn update(&mut self, doc: &mut Document) -> Result<(), StoreError> {
        let res = sqlx::query(
            "UPDATE resources SET project_id = $3, loadbalancer_id = $4, parent_id = $5, ref_id = $6, position = $7, \
             provisioning_status = $8, created_at = $9, version = $10 + 1, body = $11 WHERE kind = $1 AND id = $2 AND version = $10",
        );
        let res = bind_doc(res, doc)
            .execute(&mut *self.tx)
            .await
            .map_err(query("update"))?;
        versioned_write(res.rows_affected(), doc)
    }

    /// As [`WriteTx::update`], writing only the body and the provisioning status (the other
    /// columns must be unchanged; their indexes are left alone).
    pub async fn update_body(&mut self, doc: &mut Document) -> Result<(), StoreError> {
        let res = sqlx::query(
            "UPDATE resources SET provisioning_status = $3, version = $4 + 1, body = $5 \
             WHERE kind = $1 AND id = $2 AND version = $4",
        )
        .bind(doc.kind.as_str())
        .bind(doc.id.as_str())
        .bind(doc.provisioning_status.as_deref())
        .bind(doc.version)
        .bind(doc.body.as_str())
        .execute(&mut *self.tx)
        .await
        .map_err(query("update"))?;
        versioned_write(res.rows_affected(), doc)
    }

    /// Inserts a model resource.
    pub async fn insert_resource<T: Resource>(&mut self, value: &T) -> Result<(), StoreError> {
        self.insert(&Document::from_resource(value)?).await
    }

    /// Writes a model resource over its stored version (the caller holds the LB lock, which
    /// serializes writers of one graph). Inserts it if absent.
    pub async fn put_resource<T: Resource>(&mut self, value: &T) -> Result<(), StoreError> {
        let doc = Document::from_resource(value)?;
        // Unversioned: `bind_doc` binds the version as $10, which this statement leaves unused
        // (both drivers accept that; the LB lock serializes writers of one graph).
        let res = sqlx::query(
            "UPDATE resources SET project_id = $3, loadbalancer_id = $4, parent_id = $5, ref_id = $6, position = $7, \
             provisioning_status = $8, created_at = $9, version = version + 1, body = $11 WHERE kind = $1 AND id = $2",
        );
        let res = bind_doc(res, &doc)
            .execute(&mut *self.tx)
            .await
            .map_err(query("put"))?;
        if res.rows_affected() == 0 {
            self.insert(&doc).await?;
        }
        Ok(())
    }

    /// Deletes one document; returns whether it existed.
    pub async fn delete(
        &mut self,
        kind: impl Into<DocumentKind>,
        id: &str,
    ) -> Result<bool, StoreError> {
        let res = sqlx::query("DELETE FROM resources WHERE kind = $1 AND id = $2")
            .bind(kind.into().as_str())
            .bind(id)
            .execute(&mut *self.tx)
            .await
            .map_err(query("delete"))?;
        Ok(res.rows_affected() > 0)
    }
}

/// The outcome of a version-checked write of `doc`: one row changed bumps `doc.version`, none
/// is a conflict.
fn versioned_write(rows: u64, doc: &mut Document) -> Result<(), StoreError> {
    if rows != 1 {
        return Err(StoreError::conflict(doc));
    }
    doc.version += 1;
    Ok(())
}

pub(crate) fn bind_doc<'q>(
    q: Query<'q, Any, AnyArguments<'q>>,
    doc: &'q Document,
) -> Query<'q, Any, AnyArguments<'q>> {
    q.bind(doc.kind.as_str())
        .bind(doc.id.as_str())
        .bind(doc.project_id.as_deref())
        .bind(doc.loadbalancer_id.as_deref())
        .bind(doc.parent_id.as_deref())
        .bind(doc.ref_id.as_deref())
        .bind(doc.position)
        .bind(doc.provisioning_status.as_deref())
        .bind(doc.created_at.as_str())
        .bind(doc.version)
        .bind(doc.body.as_str())
}
