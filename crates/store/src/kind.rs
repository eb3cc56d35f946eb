//! What a stored document is: the `kind` column of `resources`, typed.
//!
//! Why a closed list rather than a free string: every crate that keeps documents here names its
//! kind once, in this enum, so a misspelt kind is a compile error instead of an empty list, and
//! a reader finds every kind the table can hold in one place. The stored spellings are the ones
//! the table has always held (no migration); [`DocumentKind::parse`] refuses anything else.

use klb_model::Kind;

/// The kind of a stored document: a resource of the LB graph (klb-model's [`Kind`]) or one of
/// the configuration and bookkeeping kinds other crates keep beside them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DocumentKind {
    /// A resource of the LB graph (body: the klb-model type of that kind).
    Resource(Kind),
    /// An Octavia flavor (klb-api admin).
    Flavor,
    /// An Octavia flavor profile (klb-api admin).
    FlavorProfile,
    /// An Octavia availability zone (klb-api admin; id = its name).
    AvailabilityZone,
    /// An Octavia availability zone profile (klb-api admin).
    AvailabilityZoneProfile,
    /// A project's quota overrides (klb-api admin; id = project id).
    Quota,
    /// A Barbican-shaped secret (klb-certs `LocalSecrets`).
    Secret,
    /// A Barbican-shaped certificate container (klb-certs `LocalSecrets`).
    SecretContainer,
    /// The cloud resources a load balancer's flows created (klb-control; id = LB id).
    LbResources,
    /// A load balancer's statistics from heartbeats (klb-health; id = LB id); see
    /// [`crate::STATS_KIND`].
    LbStats,
}

impl DocumentKind {
    /// The stored spelling (the `kind` column; a job's `target_kind`).
    pub fn as_str(self) -> &'static str {
        match self {
            DocumentKind::Resource(kind) => kind.as_str(),
            DocumentKind::Flavor => "flavor",
            DocumentKind::FlavorProfile => "flavorprofile",
            DocumentKind::AvailabilityZone => "availability_zone",
            DocumentKind::AvailabilityZoneProfile => "availability_zone_profile",
            DocumentKind::Quota => "quota",
            DocumentKind::Secret => "secret",
            DocumentKind::SecretContainer => "secretcontainer",
            DocumentKind::LbResources => "lbresources",
            DocumentKind::LbStats => "lbstats",
        }
    }

    /// Parses [`DocumentKind::as_str`].
    pub fn parse(s: &str) -> Option<DocumentKind> {
        if let Some(kind) = Kind::parse(s) {
            return Some(DocumentKind::Resource(kind));
        }
        Some(match s {
            "flavor" => DocumentKind::Flavor,
            "flavorprofile" => DocumentKind::FlavorProfile,
            "availability_zone" => DocumentKind::AvailabilityZone,
            "availability_zone_profile" => DocumentKind::AvailabilityZoneProfile,
            "quota" => DocumentKind::Quota,
            "secret" => DocumentKind::Secret,
            "secretcontainer" => DocumentKind::SecretContainer,
            "lbresources" => DocumentKind::LbResources,
            "lbstats" => DocumentKind::LbStats,
            _ => return None,
        })
    }

    /// The LB-graph kind, if this is one.
    pub fn resource(self) -> Option<Kind> {
        match self {
            DocumentKind::Resource(kind) => Some(kind),
            _ => None,
        }
    }
}

impl From<Kind> for DocumentKind {
    fn from(kind: Kind) -> Self {
        DocumentKind::Resource(kind)
    }
}

impl PartialEq<Kind> for DocumentKind {
    fn eq(&self, other: &Kind) -> bool {
        *self == DocumentKind::Resource(*other)
    }
}

impl std::fmt::Display for DocumentKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Decodes a stored kind column; an unknown spelling is a decode error, not a silent default.
pub(crate) fn decode(s: &str) -> Result<DocumentKind, sqlx::Error> {
    DocumentKind::parse(s).ok_or_else(|| sqlx::Error::Decode(format!("unknown kind {s:?}").into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stored spellings never change (they are rows in existing databases).
    fn check(kind: impl Into<DocumentKind>, stored: &str) {
        let kind = kind.into();
        assert_eq!(kind.as_str(), stored);
        assert_eq!(DocumentKind::parse(stored), Some(kind));
        assert_eq!(kind.to_string(), stored);
    }

    #[test]
    fn stored_spellings() {
        check(Kind::LoadBalancer, "loadbalancer");
        check(Kind::Listener, "listener");
        check(Kind::Pool, "pool");
        check(Kind::Member, "member");
        check(Kind::HealthMonitor, "healthmonitor");
        check(Kind::L7Policy, "l7policy");
        check(Kind::L7Rule, "l7rule");
        check(Kind::LbVm, "lbvm");
        check(DocumentKind::Flavor, "flavor");
        check(DocumentKind::FlavorProfile, "flavorprofile");
        check(DocumentKind::AvailabilityZone, "availability_zone");
        check(
            DocumentKind::AvailabilityZoneProfile,
            "availability_zone_profile",
        );
        check(DocumentKind::Quota, "quota");
        check(DocumentKind::Secret, "secret");
        check(DocumentKind::SecretContainer, "secretcontainer");
        check(DocumentKind::LbResources, "lbresources");
        check(DocumentKind::LbStats, "lbstats");
    }

    #[test]
    fn unknown_kinds_are_refused() {
        assert_eq!(DocumentKind::parse("thing"), None);
        assert_eq!(DocumentKind::parse(""), None);
        assert!(decode("LoadBalancer").is_err());
        assert_eq!(DocumentKind::Flavor, DocumentKind::Flavor);
        assert!(DocumentKind::Resource(Kind::Pool) == Kind::Pool);
        assert!(DocumentKind::Flavor != Kind::Pool);
    }
}
