//! Certificate refs as tenants write them: Barbican URLs such as
//! `http://HOST:9311/v1/secrets/UUID` or `.../v1/containers/UUID`. Only the last two path
//! segments matter, so a ref keeps working when the endpoint's host name changes.

use uuid::Uuid;

/// What a ref points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReferenceKind {
    /// A secret (PEM bundle, PKCS#12, CA bundle or CRL).
    Secret,
    /// A certificate container (certificate, private_key, intermediates secrets).
    Container,
}

/// A parsed certificate ref.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reference {
    /// Secret or container.
    pub kind: ReferenceKind,
    /// Its id.
    pub id: Uuid,
}

impl Reference {
    /// Parses `.../secrets/UUID` or `.../containers/UUID` (a trailing `/` is allowed).
    pub fn parse(text: &str) -> Option<Reference> {
        let mut segments = text.trim_end_matches('/').rsplit('/');
        let id = Uuid::parse_str(segments.next()?).ok()?;
        let kind = match segments.next()? {
            "secrets" => ReferenceKind::Secret,
            "containers" => ReferenceKind::Container,
            _ => return None,
        };
        Some(Reference { kind, id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn barbican_urls_parse() {
        let id = Uuid::new_v4();
        let r = Reference::parse(&format!("http://198.18.0.1:9311/v1/secrets/{id}")).unwrap();
        assert_eq!(r.kind, ReferenceKind::Secret);
        assert_eq!(r.id, id);
        let r = Reference::parse(&format!("https://kms/v1/containers/{id}/")).unwrap();
        assert_eq!(r.kind, ReferenceKind::Container);
    }

    #[test]
    fn other_texts_do_not() {
        let id = Uuid::new_v4();
        for bad in [
            String::new(),
            id.to_string(),
            format!("http://x/v1/orders/{id}"),
            "http://x/v1/secrets/not-a-uuid".to_owned(),
            "http://x/v1/secrets/".to_owned(),
        ] {
            assert_eq!(Reference::parse(&bad), None, "{bad}");
        }
    }
}
