//! Durable local writes: a file is written under a temporary name, fsynced, renamed to its name,
//! and its directory fsynced, so that after a crash it either exists whole or not at all.

use crate::names::temp_name;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// A file being written under a temporary name in `dir`; [`commit`](Self::commit) publishes it.
#[derive(Debug)]
pub(crate) struct PendingFile {
    dir: PathBuf,
    temp: PathBuf,
    name: String,
    pub(crate) file: Option<File>,
    committed: bool,
}

impl PendingFile {
    pub(crate) fn create(dir: &Path, name: &str) -> io::Result<Self> {
        let temp = dir.join(temp_name(name));
        let file = File::options().write(true).create_new(true).open(&temp)?;
        Ok(PendingFile {
            dir: dir.to_owned(),
            temp,
            name: name.to_owned(),
            file: Some(file),
            committed: false,
        })
    }

    /// Fsyncs the file, renames it to its name (replacing a file of that name) and fsyncs the
    /// directory. Returns the final path.
    pub(crate) fn commit(mut self) -> io::Result<PathBuf> {
        if let Some(file) = self.file.take() {
            file.sync_all()?;
        }
        let target = self.dir.join(&self.name);
        fs::rename(&self.temp, &target)?;
        self.committed = true;
        sync_dir(&self.dir)?;
        Ok(target)
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        // Not committed (an error on the way): the temporary file goes.
        if !self.committed {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// Writes `bytes` to `dir/name` durably (temporary name, fsync, rename, directory fsync).
pub(crate) fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<PathBuf> {
    let mut pending = PendingFile::create(dir, name)?;
    if let Some(file) = pending.file.as_mut() {
        file.write_all(bytes)?;
    }
    pending.commit()
}

/// Fsyncs a directory, so that a rename in it survives a crash.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Adds the path to an I/O error's text, so that the error says which file.
pub(crate) fn at(path: &Path) -> impl FnOnce(io::Error) -> io::Error + '_ {
    move |error| io::Error::new(error.kind(), format!("{}: {error}", path.display()))
}
