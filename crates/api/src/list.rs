//! List queries (octavia-api.md §0.6): pagination (`limit`, `marker`, `page_reverse`,
//! `*_links`), sorting (`sort=k:dir,...` or `sort_key`/`sort_dir`), equality filters, tag
//! filters and `fields=`.
//!
//! Two paths: with no sort, attribute filter or tag filter the page is read straight from the
//! store with keyset pagination on `(created_at, id)` (no whole-table read); otherwise the
//! scoped rows are read, rendered, filtered and sorted in memory.
//!
//! [`respond`] adds a third for the first path: the page's stamps (id, version) are read
//! without bodies, each object's JSON comes from the store's render cache ([`Fragment`]s,
//! rendered once per document version) and the response body is written directly. Only
//! documents changed since they were last rendered are read and rendered.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use klb_model::{Kind, ProvisioningStatus};
use klb_store::{Document, DocumentKind, ListQuery, Relation, Stamp};
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
                    // The page cap is never skipped: Octavia reads `infinite` and values < 1
                    // as "no limit", which lets one request render every row. klb caps
                    // `infinite` at the maximum page (with a `next` link) and refuses < 1.
                    p.limit = if v == "infinite" {
                        Some(MAX_LIMIT)
                    } else {
                        let invalid = || {
                            ApiError::BadRequest(format!(
                                "Supplied pagination limit '{}' is not valid.",
                                printable(v)
                            ))
                        };
                        let n: i64 = v.trim().parse().map_err(|_| invalid())?;
                        if n < 1 {
                            return Err(invalid());
                        }
                        Some(usize::try_from(n).unwrap_or(MAX_LIMIT).min(MAX_LIMIT))
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

    /// Appends Octavia's default sort keys that were not given, ascending (`PaginationHelper`
    /// appends `DEFAULT_SORT_KEYS` = `created_at`, `id` when the model has them, after the
    /// requested keys and in the default direction). Graph kinds need no call: the store's
    /// order is `(created_at, id)` and sorting is stable. Flavors and the profiles have no
    /// `created_at`, so they sort by `id`.
    pub fn default_sort(&mut self, keys: &[&str]) {
        for key in keys {
            if !self.sort.iter().any(|(k, _)| k == key) {
                self.sort.push(((*key).to_owned(), true));
            }
        }
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
            .map(|v| v.iter().filter(|r| r.kind == kind).collect())
            .unwrap_or_default()
    }

    /// Objects of `kind` whose reference points at `id`.
    pub fn referrers(&self, id: &str, kind: klb_model::Kind) -> Vec<&Relation> {
        self.by_ref
            .get(id)
            .map(|v| v.iter().filter(|r| r.kind == kind).collect())
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

impl Listing {
    /// The listed kind: every API listing is of one kind (`base` is built with
    /// `ListQuery::kind`).
    fn kind(&self) -> ApiResult<DocumentKind> {
        self.base
            .kind
            .ok_or_else(|| ApiError::Internal("a listing without a kind".into()))
    }
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

/// Moves the filters answered by store columns into `listing.base`; the other filters, or
/// `None` when the column filters contradict the scope (the list is empty).
fn column_filters(listing: &mut Listing, params: &ListParams) -> Option<Vec<(String, String)>> {
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
                    return None;
                }
                *slot = Some(v.clone());
            }
            None => other_filters.push((k.clone(), v.clone())),
        }
    }
    Some(other_filters)
}

/// The keyset query of a page on the store's order (`marker`, `page_reverse`, `limit`).
async fn page_query(
    state: &AppState,
    listing: &Listing,
    params: &ListParams,
) -> ApiResult<ListQuery> {
    let mut q = listing.base.clone();
    if let Some(marker) = &params.marker {
        let doc = state
            .store
            .get(listing.kind()?, marker)
            .await?
            .filter(|d| {
                listing.base.project_id.is_none() || d.project_id == listing.base.project_id
            })
            .ok_or_else(|| invalid_marker(marker))?;
        q.after = Some((doc.created_at, doc.id));
        q.descending = params.page_reverse;
    }
    q.limit = params.limit.map(|l| l as i64);
    Ok(q)
}

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
    let Some(other_filters) = column_filters(&mut listing, params) else {
        return Ok((Vec::new(), Vec::new()));
    };
    let fast = other_filters.is_empty() && params.sort.is_empty() && !params.has_tag_filters();
    let mut page: Vec<Map<String, Value>> = Vec::new();
    if fast {
        let q = page_query(state, &listing, params).await?;
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
        let rels = if listing.base.kind == Some(klb_model::Kind::Pool.into()) {
            RelIndex::load(state, &ids).await?
        } else {
            RelIndex::load_children(state, &ids).await?
        };
        for obj in &mut page {
            relate(obj, &rels);
        }
    }
    let id = |o: &Map<String, Value>| o.get("id").and_then(Value::as_str).unwrap_or("").to_owned();
    let ends = page.first().zip(page.last()).map(|(f, l)| (id(f), id(l)));
    let links = links(path, params, ends, page.len());
    let page = page
        .into_iter()
        .map(|o| select_fields(o, &params.fields))
        .collect();
    Ok((page, links))
}

/// Relation lists filled in per request on cached objects: `(key, kind)` renders the key as
/// `[{"id": ...}]` of the object's children of that kind, in creation order.
pub type Children = &'static [(&'static str, Kind)];

/// How a kind whose objects are served from the render cache is rendered.
#[derive(Debug, Clone, Copy)]
pub struct Rendering {
    /// Renders a document; must depend on the document alone (it runs once per document
    /// version, its result is kept in the store's render cache).
    pub render: RenderFn,
    /// Fills the relation lists in on the uncached path ([`run`]).
    pub relate: RelateFn,
    /// The relation lists of the cached path: exactly those `relate` fills in.
    pub children: Children,
}

/// Runs a list and writes the reply `{"<envelope>": [...], "<envelope>_links": [...]}`.
///
/// Lists that [`run`] reads straight from the store (no sort, attribute or tag filter) take
/// the cached path (see [`Rendering`]); the others go through [`run`]. Same output, byte for
/// byte, as [`run`] followed by [`crate::v2::common::reply_list`].
pub async fn respond(
    state: &AppState,
    path: &str,
    envelope: &str,
    params: &ListParams,
    mut listing: Listing,
    rendering: Rendering,
) -> ApiResult<Response> {
    let Rendering {
        render,
        relate,
        children,
    } = rendering;
    let Some(other_filters) = column_filters(&mut listing, params) else {
        return Ok(write_reply(
            envelope,
            &[],
            &[],
            None,
            &params.fields,
            children,
        ));
    };
    if !(other_filters.is_empty() && params.sort.is_empty() && !params.has_tag_filters()) {
        let (items, links) = run(state, path, params, listing, render, relate).await?;
        return Ok(crate::v2::common::reply_list(envelope, items, links));
    }
    let q = page_query(state, &listing, params).await?;
    let mut stamps = state.store.list_stamps(&q).await?;
    if q.descending {
        stamps.reverse();
    }
    let cache = state.store.render_cache();
    let kind = listing.kind()?;
    let cache_kind = cache_kind(kind);
    let mut objects = cache.get_many::<Fragment>(&cache_kind, &stamps).await;
    let missing: Vec<String> = stamps
        .iter()
        .zip(&objects)
        .filter(|(_, o)| o.is_none())
        .map(|(s, _)| s.id.clone())
        .collect();
    if !missing.is_empty() {
        let mut fresh: HashMap<String, Arc<Fragment>> = HashMap::with_capacity(missing.len());
        for d in state.store.get_many(kind, &missing).await? {
            // Re-checked because the bodies are a second read: a document deleted or moved out
            // of scope in between is left out, as if the list had been read after that change.
            if !listing.base.include_deleted && d.status() == Some(ProvisioningStatus::Deleted) {
                continue;
            }
            if listing.base.project_id.is_some() && d.project_id != listing.base.project_id {
                continue;
            }
            let fragment = Arc::new(Fragment::new(&render(&d)?));
            // Cached under the version actually rendered (it may be newer than the stamp).
            cache
                .put(
                    &cache_kind,
                    &d.stamp(),
                    fragment.clone(),
                    fragment.heap_bytes(),
                )
                .await;
            fresh.insert(d.id, fragment);
        }
        for (s, o) in stamps.iter().zip(objects.iter_mut()) {
            if o.is_none() {
                *o = fresh.get(&s.id).cloned();
            }
        }
    }
    let page: Vec<(&Stamp, Arc<Fragment>)> = stamps
        .iter()
        .zip(objects)
        .filter_map(|(s, o)| Some((s, o?)))
        .collect();
    let rels = if listing.with_relations && !page.is_empty() && !children.is_empty() {
        let ids: Vec<String> = page.iter().map(|(s, _)| s.id.clone()).collect();
        Some(RelIndex::load_children(state, &ids).await?)
    } else {
        None
    };
    let ends = page
        .first()
        .zip(page.last())
        .map(|((f, _), (l, _))| (f.id.clone(), l.id.clone()));
    let links = links(path, params, ends, page.len());
    Ok(write_reply(
        envelope,
        &page,
        &links,
        rels.as_ref(),
        &params.fields,
        children,
    ))
}

/// Writes the list reply body from fragments (the relation lists from `rels`).
fn write_reply(
    envelope: &str,
    page: &[(&Stamp, Arc<Fragment>)],
    links: &[Value],
    rels: Option<&RelIndex>,
    fields: &[String],
    children: Children,
) -> Response {
    let mut out: Vec<u8> =
        Vec::with_capacity(64 + page.iter().map(|(_, f)| f.json.len() + 2).sum::<usize>());
    let key = |out: &mut Vec<u8>, k: &str| {
        // Envelope names are plain identifiers; serde_json quotes and escapes them anyway.
        let _ = serde_json::to_writer(&mut *out, k);
    };
    out.push(b'{');
    key(&mut out, envelope);
    out.extend_from_slice(b":[");
    for (i, (stamp, f)) in page.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_object(&mut out, &stamp.id, f, rels, fields, children);
    }
    out.extend_from_slice(b"],");
    key(&mut out, &format!("{envelope}_links"));
    out.push(b':');
    let _ = serde_json::to_writer(&mut out, links);
    out.push(b'}');
    json_response(out)
}

/// Writes one cached object with its relation lists (`children`, from `rels`).
fn write_object(
    out: &mut Vec<u8>,
    id: &str,
    f: &Fragment,
    rels: Option<&RelIndex>,
    fields: &[String],
    children: Children,
) {
    f.write(out, fields, |k, out| {
        let (_, kind) = children.iter().find(|(name, _)| *name == k)?;
        out.push(b'[');
        if let Some(rels) = rels {
            for (j, r) in rels.children(id, *kind).into_iter().enumerate() {
                if j > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(b"{\"id\":");
                let _ = serde_json::to_writer(&mut *out, &r.id);
                out.push(b'}');
            }
        }
        out.push(b']');
        Some(())
    });
}

/// The render cache's kind for the API's JSON of a document kind.
fn cache_kind(kind: DocumentKind) -> String {
    format!("api-json/{kind}")
}

/// A 200 reply with a JSON body written by hand (the same header `axum::Json` sets).
fn json_response(body: Vec<u8>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// The cached rendering of `doc` (rendered and cached on a miss).
async fn fragment(state: &AppState, doc: &Document, render: RenderFn) -> ApiResult<Arc<Fragment>> {
    let cache = state.store.render_cache();
    let cache_kind = cache_kind(doc.kind);
    let stamp = doc.stamp();
    if let Some(f) = cache.get::<Fragment>(&cache_kind, &stamp).await {
        return Ok(f);
    }
    let f = Arc::new(Fragment::new(&render(doc)?));
    cache
        .put(&cache_kind, &stamp, f.clone(), f.heap_bytes())
        .await;
    Ok(f)
}

/// Writes `{"<envelope>": obj}` for one stored object (a show), from the render cache like
/// [`respond`], with its relation lists read now and `fields` applied. The caller has checked
/// that `doc` may be shown.
pub async fn respond_one(
    state: &AppState,
    envelope: &str,
    doc: &Document,
    rendering: Rendering,
    fields: &[String],
) -> ApiResult<Response> {
    let children = rendering.children;
    let f = fragment(state, doc, rendering.render).await?;
    let rels = if children.is_empty() {
        None
    } else {
        Some(RelIndex::load_children(state, std::slice::from_ref(&doc.id)).await?)
    };
    let mut out = Vec::with_capacity(f.json.len() + envelope.len() + 64);
    out.push(b'{');
    let _ = serde_json::to_writer(&mut out, envelope);
    out.push(b':');
    write_object(&mut out, &doc.id, &f, rels.as_ref(), fields, children);
    out.push(b'}');
    Ok(json_response(out))
}

/// One rendered object as JSON text, member by member in output order (the order
/// `serde_json` writes the rendered map in), so that `fields=` and per-request relation lists
/// can be applied without parsing it again.
#[derive(Debug)]
pub struct Fragment {
    /// `"key":value` members, without separators.
    json: String,
    /// Per member: start of `"key"`, start of the value, end.
    members: Vec<(u32, u32, u32)>,
}

impl Fragment {
    /// Serializes a rendered object.
    pub fn new(obj: &Map<String, Value>) -> Fragment {
        let mut json = Vec::with_capacity(obj.len() * 24);
        let mut members = Vec::with_capacity(obj.len());
        for (k, v) in obj {
            let start = json.len() as u32;
            // Writing into a Vec cannot fail; a map key or JSON value always serializes.
            let _ = serde_json::to_writer(&mut json, k);
            json.push(b':');
            let value = json.len() as u32;
            let _ = serde_json::to_writer(&mut json, v);
            members.push((start, value, json.len() as u32));
        }
        Fragment {
            // serde_json writes UTF-8 only.
            json: String::from_utf8(json).unwrap_or_default(),
            members,
        }
    }

    /// Approximate heap size (for the cache bound).
    pub fn heap_bytes(&self) -> usize {
        self.json.capacity() + self.members.capacity() * 12 + 48
    }

    /// Writes `{...}` keeping only `fields` (all when empty); `replace(key, out)` may write a
    /// member's value itself (returning `Some`) instead of the cached one.
    fn write(
        &self,
        out: &mut Vec<u8>,
        fields: &[String],
        mut replace: impl FnMut(&str, &mut Vec<u8>) -> Option<()>,
    ) {
        out.push(b'{');
        let mut first = true;
        for &(start, value, end) in &self.members {
            let (start, value, end) = (start as usize, value as usize, end as usize);
            // The quoted key; rendered keys are plain identifiers, so unquoting is slicing.
            let k = &self.json[start + 1..value - 2];
            if !fields.is_empty() && !fields.iter().any(|f| f == k) {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(&self.json.as_bytes()[start..value]);
            if replace(k, out).is_none() {
                out.extend_from_slice(&self.json.as_bytes()[value..end]);
            }
        }
        out.push(b'}');
    }
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

/// Octavia's `*_links` of a page of `len` objects whose first and last ids are `ends`.
fn links(
    path: &str,
    params: &ListParams,
    ends: Option<(String, String)>,
    len: usize,
) -> Vec<Value> {
    let mut links = Vec::new();
    let Some((first, last)) = ends else {
        return links;
    };
    let Some(limit) = params.limit else {
        return links;
    };
    let mut base = vec![format!("limit={limit}")];
    for (k, v) in &params.link_params {
        base.push(format!("{k}={}", encode(v)));
    }
    if params.marker.is_some() {
        let mut prev = base.clone();
        prev.push(format!("marker={}", encode(&first)));
        prev.push("page_reverse=True".to_owned());
        links.push(
            serde_json::json!({"href": format!("{path}?{}", prev.join("&")), "rel": "previous"}),
        );
    }
    if len >= limit {
        let mut next = base;
        next.push(format!("marker={}", encode(&last)));
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
