//! Reading local files given by the user (new config, inventory, keys,
//! known_hosts) with a bound on the bytes actually read.
//!
//! Owns: the refusal of what is not a regular file (a FIFO would block, a
//! device would never end) and the size cap, counted while reading rather
//! than trusted from metadata.

use std::io::Read;
use std::path::Path;

/// Why a local file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LocalReadError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("is a directory")]
    Directory,
    #[error("is not a regular file ({kind})")]
    NotRegular { kind: &'static str },
    #[error("over the {limit}-byte limit")]
    TooLarge { limit: u64 },
}

fn kind(ft: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// Read `path` (following symlinks) if it is a regular file of at most
/// `limit` bytes. Nothing is opened unless the file is regular.
pub fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, LocalReadError> {
    let meta = std::fs::metadata(path)?;
    if meta.is_dir() {
        return Err(LocalReadError::Directory);
    }
    if !meta.is_file() {
        return Err(LocalReadError::NotRegular {
            kind: kind(meta.file_type()),
        });
    }
    let file = std::fs::File::open(path)?;
    let mut buf = Vec::new();
    file.take(limit + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > limit {
        return Err(LocalReadError::TooLarge { limit });
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_and_kinds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("f");
        std::fs::write(&f, b"12345").expect("write");
        assert_eq!(read_bounded(&f, 5).expect("read"), b"12345");
        assert!(matches!(
            read_bounded(&f, 4),
            Err(LocalReadError::TooLarge { limit: 4 })
        ));
        assert!(matches!(
            read_bounded(dir.path(), 4),
            Err(LocalReadError::Directory)
        ));
        assert!(matches!(
            read_bounded(Path::new("/dev/zero"), 4),
            Err(LocalReadError::NotRegular {
                kind: "a character device"
            })
        ));
    }
}
