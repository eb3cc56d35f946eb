//! The generic document: one row of the `resources` table.

use klb_model::{ProvisioningStatus, Resource};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::StoreError;
use crate::kind::{self, DocumentKind};

/// One stored object. `body` is the JSON document; the other fields are indexed columns.
/// For LB-graph kinds (klb-model [`Resource`]s) the body has top-level `provisioning_status`
/// and `updated_at` keys, which [`crate::Store::settle_job`] rewrites.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// What the document is.
    pub kind: DocumentKind,
    /// Primary key within the kind (a UUID for LB-graph kinds; any string otherwise).
    pub id: String,
    /// Owning project, if any.
    pub project_id: Option<String>,
    /// Load balancer graph this belongs to.
    pub loadbalancer_id: Option<String>,
    /// Direct parent id.
    pub parent_id: Option<String>,
    /// Secondary reference (default pool, redirect pool).
    pub ref_id: Option<String>,
    /// Ordering among siblings.
    pub position: i64,
    /// Provisioning status, for kinds that have one. `DELETED` rows are hidden from lists.
    pub provisioning_status: Option<String>,
    /// [`crate::timestamp`] of creation.
    pub created_at: String,
    /// Bumped by every update; [`crate::WriteTx::update`] checks it.
    pub version: i64,
    /// The JSON document.
    pub body: String,
}

/// A lightweight relation row (no body): who points at which id.
#[derive(Debug, Clone, PartialEq)]
pub struct Relation {
    /// Kind of the pointing document.
    pub kind: DocumentKind,
    /// Its id.
    pub id: String,
    /// Its parent id.
    pub parent_id: Option<String>,
    /// Its secondary reference.
    pub ref_id: Option<String>,
    /// Its position.
    pub position: i64,
}

/// Which stored version of a document a row is: what a list needs to tell whether a cached
/// rendering ([`crate::RenderCache`]) is still current, without reading the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    /// Document id.
    pub id: String,
    /// [`crate::timestamp`] of creation (tells a re-created document from the old one).
    pub created_at: String,
    /// Bumped by every update.
    pub version: i64,
}

/// A list query on one kind. Results are ordered by `(created_at, id)`.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Kind to list (`None`: every kind).
    pub kind: Option<DocumentKind>,
    /// Only this project.
    pub project_id: Option<String>,
    /// Only this load balancer graph.
    pub loadbalancer_id: Option<String>,
    /// Only children of this parent.
    pub parent_id: Option<String>,
    /// Only documents whose `ref_id` is this.
    pub ref_id: Option<String>,
    /// Include `DELETED` rows.
    pub include_deleted: bool,
    /// Keyset pagination: only rows after (or before, when `descending`) this
    /// `(created_at, id)`.
    pub after: Option<(String, String)>,
    /// Newest first.
    pub descending: bool,
    /// At most this many rows.
    pub limit: Option<i64>,
}

impl ListQuery {
    /// All documents of a kind.
    pub fn kind(kind: impl Into<DocumentKind>) -> Self {
        ListQuery {
            kind: Some(kind.into()),
            ..Default::default()
        }
    }
}

impl Document {
    /// A new document outside the LB graph (no parent, reference, position or provisioning
    /// status), created now, version 1: configuration and bookkeeping kinds (quotas, secrets,
    /// statistics, cloud resource records).
    pub fn new(kind: DocumentKind, id: &str, project_id: Option<&str>, body: String) -> Document {
        Document {
            kind,
            id: id.to_owned(),
            project_id: project_id.map(str::to_owned),
            loadbalancer_id: None,
            parent_id: None,
            ref_id: None,
            position: 0,
            provisioning_status: None,
            created_at: crate::timestamp(chrono::Utc::now()),
            version: 1,
            body,
        }
    }

    /// Builds the row for a model resource (version 1, for a first insert).
    pub fn from_resource<T: Resource>(value: &T) -> Result<Document, StoreError> {
        let body = serde_json::to_string(value).map_err(|source| StoreError::Encode {
            kind: T::KIND.into(),
            source,
        })?;
        Ok(Document {
            kind: T::KIND.into(),
            id: value.id().to_string(),
            project_id: value.project_id().map(str::to_owned),
            loadbalancer_id: value.loadbalancer_id().map(|u| u.to_string()),
            parent_id: value.parent_id().map(|u| u.to_string()),
            ref_id: value.ref_id().map(|u| u.to_string()),
            position: value.position(),
            provisioning_status: value.provisioning_status().map(|s| s.as_str().to_owned()),
            created_at: crate::timestamp(value.created_at()),
            version: 1,
            body,
        })
    }

    /// Decodes the body as a model resource.
    pub fn decode<T: Resource>(&self) -> Result<T, StoreError> {
        serde_json::from_str(&self.body).map_err(|source| StoreError::Decode {
            kind: self.kind,
            id: self.id.clone(),
            source,
        })
    }

    /// The stamp of this version of the document.
    pub fn stamp(&self) -> Stamp {
        Stamp {
            id: self.id.clone(),
            created_at: self.created_at.clone(),
            version: self.version,
        }
    }

    /// The provisioning status column, parsed.
    pub fn status(&self) -> Option<ProvisioningStatus> {
        self.provisioning_status.as_deref()?.parse().ok()
    }

    pub(crate) const COLUMNS: &'static str = "kind, id, project_id, loadbalancer_id, parent_id, ref_id, position, provisioning_status, created_at, version, body";

    pub(crate) fn from_row(row: &AnyRow) -> Result<Document, sqlx::Error> {
        let kind: String = row.try_get(0)?;
        Ok(Document {
            kind: kind::decode(&kind)?,
            id: row.try_get(1)?,
            project_id: row.try_get(2)?,
            loadbalancer_id: row.try_get(3)?,
            parent_id: row.try_get(4)?,
            ref_id: row.try_get(5)?,
            position: row.try_get(6)?,
            provisioning_status: row.try_get(7)?,
            created_at: row.try_get(8)?,
            version: row.try_get(9)?,
            body: row.try_get(10)?,
        })
    }

    /// Rewrites the body through its model type: decode, `change`, encode (the completion
    /// rules' writes; no patch by JSON key, so a renamed field is a compile error here).
    pub(crate) fn rewrite<T: Resource>(
        &mut self,
        change: impl FnOnce(&mut T),
    ) -> Result<(), StoreError> {
        let mut value: T = self.decode()?;
        change(&mut value);
        self.body = serde_json::to_string(&value).map_err(|source| StoreError::Encode {
            kind: self.kind,
            source,
        })?;
        Ok(())
    }
}

impl Relation {
    pub(crate) fn from_row(row: &AnyRow) -> Result<Relation, sqlx::Error> {
        let kind: String = row.try_get(0)?;
        Ok(Relation {
            kind: kind::decode(&kind)?,
            id: row.try_get(1)?,
            parent_id: row.try_get(2)?,
            ref_id: row.try_get(3)?,
            position: row.try_get(4)?,
        })
    }
}
