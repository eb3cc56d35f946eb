//! List queries (octavia-api.md §0.6): pagination (`limit`, `marker`, `page_reverse`,
//! `*_links`), sorting (`sort=k:dir,...` or `sort_key`/`sort_dir`), equality filters, tag
//! filters and `fields=`.
//!
//! Two paths: with no sort, attribute filter or tag filter the page is read straight from the
//! store with keyset pagination on `(created_at, id)` (no whole-table read); otherwise the
//! scoped rows are read, rendered, filtered and sorted in memory.

use std::cmp::Ordering;
use std::collections::HashMap;

use klb_store::{Document, ListQuery, Relation};
use serde_json::{Map, Value};

use crate::AppState;
use crate::error::{ApiError, ApiResult};

/// Parsed list parameters.
#[derive(Debug, Clone, Default)]
pub struct ListParams {
    /// Page size (`None` = unlimited).
    pub limit: Option<usize>,
    /// Id of the last item seen.
    pub marker: Option<String>,
    /// Walk backwards from the marker.
    pub page_reverse: bool,
    /// Sort keys with ascending flag.
    pub sort: Vec<(String, bool)>,
    /// Equality filters on attributes.
    pub filters: Vec<(String, String)>,
    /// `tags`: has all.
    pub tags: Vec<String>,
    /// `tags-any`: has any.
    pub tags_any: Vec<String>,
    /// `not-tags`: does not have all.
    pub not_tags: Vec<String>,
    /// `not-tags-any`: has none.
    pub not_tags_any: Vec<String>,
    /// `fields`: attributes to keep.
    pub fields: Vec<String>,
    link_params: Vec<(String, String)>,
}

/// The default and maximum page size (`pagination_max_limit`).
pub const MAX_LIMIT: usize = 1000;

/// Query parameters that are not attribute filters.
const RESERVED: &[&str] = &["cascade", "additive_only"];

impl ListParams {
    /// Parses the query string pairs.
    pub fn parse(pairs: &[(String, String)]) -> ApiResult<ListParams> {
        let mut p = ListParams {
            limit: Some(MAX_LIMIT),
            ..Default::default()
        };
        let mut sort_keys: Vec<String> = Vec::new();
        let mut sort_dirs: Vec<String> = Vec::new();
        let split = |v: &str| {
            v.split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
        };
        for (k, v) in pairs {
            match k.as_str() {
                "limit" => {
                    p.limit = if v == "infinite" {
                        None
                    } else {
                        let n: i64 = v.parse().map_err(|_| {
                            ApiError::BadRequest(format!(
                                "Supplied pagination limit '{}' is not valid.",
                                printable(v)
                            ))
                        })?;
                        if n < 1 {
                            None
                        } else {
                            Some((n as usize).min(MAX_LIMIT))
                        }
                    };
                }
                "marker" => p.marker = Some(v.clone()),
                "page_reverse" => p.page_reverse = v == "True" || v == "true",
                "sort" => {
                    p.link_params.push((k.clone(), v.clone()));
                    for item in split(v) {
                        let (key, dir) = match item.split_once(':') {
                            Some((key, dir)) => (key.trim().to_owned(), dir.trim().to_owned()),
                            None => (item.clone(), "asc".to_owned()),
                        };
                        p.sort.push((key, parse_dir(&dir)?));
                    }
                }
                "sort_key" => {
                    p.link_params.push((k.clone(), v.clone()));
                    sort_keys.extend(split(v));
                }
                "sort_dir" => sort_dirs.extend(split(v)),
                "fields" => p.fields.extend(split(v)),
                "tags" => p.tags.extend(split(v)),
                "tags-any" => p.tags_any.extend(split(v)),
                "not-tags" => p.not_tags.extend(split(v)),
                "not-tags-any" => p.not_tags_any.extend(split(v)),
                other if RESERVED.contains(&other) => {}
                _ => p.filters.push((k.clone(), v.clone())),
            }
        }
        for (i, key) in sort_keys.into_iter().enumerate() {
            let dir = sort_dirs
                .get(i)
                .or(sort_dirs.last())
                .map(String::as_str)
                .unwrap_or("asc");
            p.sort.push((key, parse_dir(dir)?));
        }
        Ok(p)
    }

    fn has_tag_filters(&self) -> bool {
        !(self.tags.is_empty()
            && self.tags_any.is_empty()
            && self.not_tags.is_empty()
            && self.not_tags_any.is_empty())
    }
}

fn parse_dir(dir: &str) -> ApiResult<bool> {
    match dir {
        "asc" => Ok(true),
        "desc" => Ok(false),
        other => Err(ApiError::BadRequest(format!(
            "Supplied sort direction '{}' is not valid.",
            printable(other)
        ))),
    }
}

fn printable(s: &str) -> String {
    klb_model::validate::printable(s)
}

/// Index of relation rows for one page of objects.
#[derive(Debug, Default)]
pub struct RelIndex {
    by_parent: HashMap<String, Vec<Relation>>,
    by_ref: HashMap<String, Vec<Relation>>,
}

impl RelIndex {
    /// Builds the index.
    pub fn new(rels: Vec<Relation>) -> RelIndex {
        let mut idx = RelIndex::default();
        for r in rels {
            if let Some(p) = &r.ref_id {
                idx.by_ref.entry(p.clone()).or_default().push(r.clone());
            }
            if let Some(p) = &r.parent_id {
                idx.by_parent.entry(p.clone()).or_default().push(r);
            }
        }
        idx
    }

    /// Loads relations of `ids`.
    pub async fn load(state: &AppState, ids: &[String]) -> ApiResult<RelIndex> {
        let mut rels = Vec::new();
        for chunk in ids.chunks(400) {
            rels.extend(state.store.relations(chunk).await?);
        }
        Ok(RelIndex::new(rels))
    }

    /// Loads only children of `ids` (cheaper; for kinds nothing references).
    pub async fn load_children(state: &AppState, ids: &[String]) -> ApiResult<RelIndex> {
        let mut rels = Vec::new();
        for chunk in ids.chunks(800) {
            rels.extend(state.store.children(chunk).await?);
        }
        Ok(RelIndex::new(rels))
    }

    /// Children of `id` of `kind`, in creation order.
    pub fn children(&self, id: &str, kind: klb_model::Kind) -> Vec<&Relation> {
        self.by_parent
            .get(id)
            .map(|v| v.iter().filter(|r| r.kind == kind.as_str()).collect())
            .unwrap_or_default()
    }

    /// Objects of `kind` whose reference points at `id`.
    pub fn referrers(&self, id: &str, kind: klb_model::Kind) -> Vec<&Relation> {
        self.by_ref
            .get(id)
            .map(|v| v.iter().filter(|r| r.kind == kind.as_str()).collect())
            .unwrap_or_default()
    }

    /// `[{"id": ...}]` of the children of a kind.
    pub fn child_refs(&self, id: &str, kind: klb_model::Kind) -> Value {
        Value::Array(
            self.children(id, kind)
                .into_iter()
                .map(|r| serde_json::json!({"id": r.id}))
                .collect(),
        )
    }
}

/// How one kind is listed.
pub struct Listing {
    /// The store query that scopes the list (kind, project, parent).
    pub base: ListQuery,
    /// Filter names answered by store columns: `(name, column)` where column is
    /// `loadbalancer_id`, `parent_id` or `project_id`.
    pub column_filters: &'static [(&'static str, Column)],
    /// Whether rendered objects need relation lists.
    pub with_relations: bool,
}

/// A store column usable as a filter.
#[derive(Debug, Clone, Copy)]
pub enum Column {
    /// `loadbalancer_id`.
    LoadBalancer,
    /// `parent_id`.
    Parent,
    /// `project_id`.
    Project,
}

/// Renders one stored document (without relation lists).
pub type RenderFn = fn(&Document) -> ApiResult<Map<String, Value>>;
/// Adds relation lists to a rendered object.
pub type RelateFn = fn(&mut Map<String, Value>, &RelIndex);

/// Runs a list: returns the page (with `fields` applied) and the links.
pub async fn run(
    state: &AppState,
    path: &str,
    params: &ListParams,
    mut listing: Listing,
    render: RenderFn,
    relate: RelateFn,
) -> ApiResult<(Vec<Value>, Vec<Value>)> {
    // Column filters go to the store; an impossible combination yields an empty list.
    let mut other_filters = Vec::new();
    for (k, v) in &params.filters {
        match listing.column_filters.iter().find(|(name, _)| name == k) {
            Some((_, col)) => {
                let slot = match col {
                    Column::LoadBalancer => &mut listing.base.loadbalancer_id,
                    Column::Parent => &mut listing.base.parent_id,
                    Column::Project => &mut listing.base.project_id,
                };
                if slot.as_ref().is_some_and(|cur| cur != v) {
                    return Ok((Vec::new(), Vec::new()));
                }
                *slot = Some(v.clone());
            }
            None => other_filters.push((k.clone(), v.clone())),
        }
    }
    let fast = other_filters.is_empty() && params.sort.is_empty() && !params.has_tag_filters();
    let mut page: Vec<Map<String, Value>> = Vec::new();
    if fast {
        let mut q = listing.base.clone();
        if let Some(marker) = &params.marker {
            let doc = state
                .store
                .get(&q.kind, marker)
                .await?
                .filter(|d| {
                    listing.base.project_id.is_none() || d.project_id == listing.base.project_id
                })
                .ok_or_else(|| invalid_marker(marker))?;
            q.after = Some((doc.created_at, doc.id));
            q.descending = params.page_reverse;
        }
        q.limit = params.limit.map(|l| l as i64);
        let mut docs = state.store.list(&q).await?;
        if q.descending {
            docs.reverse();
        }
        for d in &docs {
            page.push(render(d)?);
        }
    } else {
        let docs = state.store.list(&listing.base).await?;
        let mut items: Vec<Map<String, Value>> = Vec::with_capacity(docs.len());
        for d in &docs {
            let obj = render(d)?;
            if matches_filters(&obj, &other_filters)? && matches_tags(&obj, params) {
                items.push(obj);
            }
        }
        if !params.sort.is_empty() {
            for (key, _) in &params.sort {
                let valid = docs.is_empty()
                    || items.first().is_none_or(|o| {
                        o.get(key).is_some_and(|v| !v.is_array() && !v.is_object())
                    });
                if !valid || key.is_empty() {
                    return Err(ApiError::BadRequest(format!(
                        "Supplied sort key '{}' is not valid.",
                        printable(key)
                    )));
                }
            }
            items.sort_by(|a, b| {
                for (key, asc) in &params.sort {
                    let ord = compare(a.get(key), b.get(key));
                    if ord != Ordering::Equal {
                        return if *asc { ord } else { ord.reverse() };
                    }
                }
                Ordering::Equal
            });
        }
        let (start, end) = match &params.marker {
            Some(marker) => {
                let idx = items
                    .iter()
                    .position(|o| o.get("id").and_then(Value::as_str) == Some(marker.as_str()))
                    .ok_or_else(|| invalid_marker(marker))?;
                if params.page_reverse {
                    let start = params.limit.map(|l| idx.saturating_sub(l)).unwrap_or(0);
                    (start, idx)
                } else {
                    let end = params
                        .limit
                        .map(|l| (idx + 1 + l).min(items.len()))
                        .unwrap_or(items.len());
                    (idx + 1, end)
                }
            }
            None => (
                0,
                params
                    .limit
                    .map(|l| l.min(items.len()))
                    .unwrap_or(items.len()),
            ),
        };
        page = items.drain(start..end).collect();
    }
    if listing.with_relations && !page.is_empty() {
        let ids: Vec<String> = page
            .iter()
            .filter_map(|o| o.get("id").and_then(Value::as_str).map(str::to_owned))
            .collect();
        // Only pools are referenced (default pool, redirect pool); other kinds need children only.
        let rels = if listing.base.kind == klb_model::Kind::Pool.as_str() {
            RelIndex::load(state, &ids).await?
        } else {
            RelIndex::load_children(state, &ids).await?
        };
        for obj in &mut page {
            relate(obj, &rels);
        }
    }
    let links = links(path, params, &page);
    let page = page
        .into_iter()
        .map(|o| select_fields(o, &params.fields))
        .collect();
    Ok((page, links))
}

fn invalid_marker(marker: &str) -> ApiError {
    ApiError::BadRequest(format!(
        "Supplied pagination marker '{}' is not valid.",
        printable(marker)
    ))
}

/// Keeps only `fields` (all when empty).
pub fn select_fields(mut obj: Map<String, Value>, fields: &[String]) -> Value {
    if !fields.is_empty() {
        obj.retain(|k, _| fields.iter().any(|f| f == k));
    }
    Value::Object(obj)
}

fn matches_filters(obj: &Map<String, Value>, filters: &[(String, String)]) -> ApiResult<bool> {
    for (k, want) in filters {
        let Some(v) = obj.get(k) else {
            return Err(ApiError::BadRequest(
                "One or more arguments are either duplicate or invalid".to_owned(),
            ));
        };
        let ok = match v {
            Value::String(s) => s == want,
            Value::Bool(b) => {
                want.eq_ignore_ascii_case(if *b { "true" } else { "false" })
                    || (want == "1") == *b && (want == "1" || want == "0")
            }
            Value::Number(n) => n.to_string() == *want || want.parse::<f64>().ok() == n.as_f64(),
            Value::Null => want.is_empty() || want == "None" || want == "null",
            _ => {
                return Err(ApiError::BadRequest(
                    "One or more arguments are either duplicate or invalid".to_owned(),
                ));
            }
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

fn matches_tags(obj: &Map<String, Value>, p: &ListParams) -> bool {
    let tags: Vec<&str> = obj
        .get("tags")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let has = |t: &String| tags.contains(&t.as_str());
    (p.tags.is_empty() || p.tags.iter().all(has))
        && (p.tags_any.is_empty() || p.tags_any.iter().any(has))
        && (p.not_tags.is_empty() || !p.not_tags.iter().all(has))
        && (p.not_tags_any.is_empty() || !p.not_tags_any.iter().any(has))
}

fn compare(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    match (a, b) {
        (None | Some(Value::Null), None | Some(Value::Null)) => Ordering::Equal,
        (None | Some(Value::Null), _) => Ordering::Less,
        (_, None | Some(Value::Null)) => Ordering::Greater,
        (Some(Value::Number(x)), Some(Value::Number(y))) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(Ordering::Equal),
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        (Some(x), Some(y)) => x.to_string().cmp(&y.to_string()),
    }
}

fn links(path: &str, params: &ListParams, page: &[Map<String, Value>]) -> Vec<Value> {
    let mut links = Vec::new();
    let (Some(first), Some(last)) = (page.first(), page.last()) else {
        return links;
    };
    let Some(limit) = params.limit else {
        return links;
    };
    let mut base = vec![format!("limit={limit}")];
    for (k, v) in &params.link_params {
        base.push(format!("{k}={}", encode(v)));
    }
    let id = |o: &Map<String, Value>| o.get("id").and_then(Value::as_str).unwrap_or("").to_owned();
    if params.marker.is_some() {
        let mut prev = base.clone();
        prev.push(format!("marker={}", encode(&id(first))));
        prev.push("page_reverse=True".to_owned());
        links.push(
            serde_json::json!({"href": format!("{path}?{}", prev.join("&")), "rel": "previous"}),
        );
    }
    if page.len() >= limit {
        let mut next = base;
        next.push(format!("marker={}", encode(&id(last))));
        links
            .push(serde_json::json!({"href": format!("{path}?{}", next.join("&")), "rel": "next"}));
    }
    links
}

fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:,".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
