//! The local 256-bit master key file that stands in for KMS when `SWITCHBOARD_KMS_KEY_ID`
//! is unset (development only). Created once with mode 0600; never logged.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use rand::RngCore;

#[derive(Debug, PartialEq, Eq)]
pub enum MasterKeyFile {
    Created,
    Existing,
}

#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    #[error("master key file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("master key file {path} is not 64 hex characters (a 256-bit key)")]
    Malformed { path: String },
    #[error(
        "master key file {path} is readable by other users (mode {mode:o}); run `chmod 600 {path}`"
    )]
    TooOpen { path: String, mode: u32 },
}

/// Creates the key file if it does not exist, else checks that it is well formed and
/// private. Returns the 32 key bytes.
pub fn ensure_master_key_file(path: &Path) -> Result<(MasterKeyFile, [u8; 32]), MasterKeyError> {
    let display = path.display().to_string();
    let io = |source| MasterKeyError::Io {
        path: display.clone(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(io)?;
    }
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(mut file) => {
            let encoded: String = key.iter().map(|b| format!("{b:02x}")).collect();
            file.write_all(format!("{encoded}\n").as_bytes())
                .map_err(io)?;
            file.sync_all().map_err(io)?;
            Ok((MasterKeyFile::Created, key))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let mode = fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(MasterKeyError::TooOpen {
                    path: display,
                    mode,
                });
            }
            let text = fs::read_to_string(path).map_err(io)?;
            let text = text.trim();
            if text.len() != 64 {
                return Err(MasterKeyError::Malformed { path: display });
            }
            for (i, chunk) in text.as_bytes().chunks(2).enumerate() {
                let pair = std::str::from_utf8(chunk).map_err(|_| MasterKeyError::Malformed {
                    path: display.clone(),
                })?;
                key[i] = u8::from_str_radix(pair, 16).map_err(|_| MasterKeyError::Malformed {
                    path: display.clone(),
                })?;
            }
            Ok((MasterKeyFile::Existing, key))
        }
        Err(e) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("sb-mk-{}-{}", std::process::id(), name));
        let _ = fs::remove_dir_all(&dir);
        dir.join("sub").join("master.key")
    }

    #[test]
    fn creates_private_file_then_reuses_it() {
        let path = temp_path("create");
        let (first, key1) = ensure_master_key_file(&path).unwrap();
        assert_eq!(first, MasterKeyFile::Created);
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let (second, key2) = ensure_master_key_file(&path).unwrap();
        assert_eq!(second, MasterKeyFile::Existing);
        assert_eq!(key1, key2);
    }

    #[test]
    fn refuses_open_or_malformed_files() {
        let path = temp_path("open");
        ensure_master_key_file(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            ensure_master_key_file(&path),
            Err(MasterKeyError::TooOpen { .. })
        ));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(&path, "not-a-key").unwrap();
        assert!(matches!(
            ensure_master_key_file(&path),
            Err(MasterKeyError::Malformed { .. })
        ));
    }
}
