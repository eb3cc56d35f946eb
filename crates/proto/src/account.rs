//! System accounts on the host that runs FRR: the numeric id of a user or group, and handing a
//! directory tree to them (`chown -R` without the command).
//!
//! Both FRR hosts need this: the agent on each LB VM and the local cloud's gateways
//! (`klb-local`). It lives here because klb-proto is the lowest crate both already build (the
//! agent directly, klb-local through klb-cloud) and this module needs nothing beyond std, so
//! neither side pulls in anything new. Each caller maps [`AccountError`] into its own error
//! enum.

use std::path::{Path, PathBuf};

/// A file that could not be read or an entry that could not be handed over, with the step and
/// the path it failed on.
#[derive(Debug, thiserror::Error)]
#[error("{op} {}: {source}", path.display())]
pub struct AccountError {
    /// What was being done (`read`, `chown`).
    pub op: &'static str,
    /// The file or directory entry it failed on.
    pub path: PathBuf,
    /// The OS error (`NotFound` for a name the file does not list).
    #[source]
    pub source: std::io::Error,
}

/// The numeric id of `name` in a `passwd`- or `group`-format file (`name:x:ID:...`). FRR's
/// package creates its user and group there; NSS sources beyond the files are not consulted.
pub fn account_id(file: &Path, name: &str) -> Result<u32, AccountError> {
    let err = |source| AccountError {
        op: "read",
        path: file.to_path_buf(),
        source,
    };
    let text = std::fs::read_to_string(file).map_err(err)?;
    text.lines()
        .map(|l| l.split(':'))
        .find_map(|mut f| {
            (f.next() == Some(name))
                .then(|| f.nth(1).and_then(|id| id.parse().ok()))
                .flatten()
        })
        .ok_or_else(|| {
            err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no entry {name:?}"),
            ))
        })
}

/// `chown -R uid:gid path` without the command: symbolic links are changed themselves, never
/// followed (lchown), as `chown -R` does by default. Blocking: async callers run it on a
/// blocking thread.
pub fn chown_recursive(path: &Path, uid: u32, gid: u32) -> Result<(), AccountError> {
    let err = |source| AccountError {
        op: "chown",
        path: path.to_path_buf(),
        source,
    };
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(err)?;
    if !std::fs::symlink_metadata(path).map_err(err)?.is_dir() {
        return Ok(());
    }
    for entry in std::fs::read_dir(path).map_err(err)? {
        chown_recursive(&entry.map_err(err)?.path(), uid, gid)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn accounts_come_from_passwd_format_files() {
        let dir = tempfile::tempdir().unwrap();
        let passwd = dir.path().join("passwd");
        std::fs::write(
            &passwd,
            "root:x:0:0::/root:/bin/sh\nfrrx:x:7:7::/:/bin/false\nfrr:x:105:110::/nonexistent:/bin/false\n",
        )
        .unwrap();
        assert_eq!(account_id(&passwd, "frr").unwrap(), 105);
        assert_eq!(account_id(&passwd, "root").unwrap(), 0);
        let err = account_id(&passwd, "fr").unwrap_err();
        assert_eq!(err.source.kind(), std::io::ErrorKind::NotFound);
        assert!(err.to_string().contains("no entry \"fr\""), "{err}");
        let group = dir.path().join("group");
        std::fs::write(&group, "frrvty:x:85:\nfrr:x:102:\n").unwrap();
        assert_eq!(account_id(&group, "frr").unwrap(), 102);
        let err = account_id(&dir.path().join("absent"), "frr").unwrap_err();
        assert_eq!(err.path, dir.path().join("absent"));
        assert_eq!(err.op, "read");
    }

    #[test]
    fn chown_recursive_reaches_every_entry_and_leaves_link_targets() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::NamedTempFile::new().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/zebra.conf"), "").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(outside.path(), &link).unwrap();
        let before = std::fs::metadata(outside.path()).unwrap();
        if before.uid() == 0 {
            // Root: give everything to another id; the link changes, its target does not.
            chown_recursive(dir.path(), 54321, 54322).unwrap();
            for p in ["sub", "sub/zebra.conf", "link"] {
                let m = std::fs::symlink_metadata(dir.path().join(p)).unwrap();
                assert_eq!((m.uid(), m.gid()), (54321, 54322), "{p}");
            }
            assert_eq!(std::fs::metadata(outside.path()).unwrap().uid(), 0);
        } else {
            // Unprivileged: our own ids are allowed; root's are refused, naming the step.
            chown_recursive(dir.path(), before.uid(), before.gid()).unwrap();
            let err = chown_recursive(dir.path(), 0, 0).unwrap_err().to_string();
            assert!(err.starts_with("chown "), "{err}");
        }
        let err = chown_recursive(&dir.path().join("absent"), 0, 0).unwrap_err();
        assert_eq!(err.path, dir.path().join("absent"));
        assert_eq!(err.op, "chown");
    }
}
