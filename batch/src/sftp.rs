//! SFTP as a [`Remote`]: the SFTP protocol (the `russh-sftp` client) over a byte stream, by
//! default the OpenSSH client's `ssh -s <host> sftp`, which brings the account's keys, agent,
//! `known_hosts` and `~/.ssh/config` as every other SSH tool on the machine uses them.
//!
//! The server keeps the marker-last rule as a directory does: each file is written under a
//! temporary name, synced (`fsync@openssh.com` where the server offers it), then renamed.

use crate::names::{temp_name, TEMP_PREFIX};
use crate::transfer::{Remote, TransferError};
use async_trait::async_trait;
use russh_sftp::client::SftpSession;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::process::{Child, Command};

/// How to start the OpenSSH client for an SFTP session.
#[derive(Debug, Clone)]
#[must_use]
pub struct SshCommand {
    program: PathBuf,
    host: String,
    user: Option<String>,
    port: Option<u16>,
    identity: Option<PathBuf>,
    known_hosts: Option<PathBuf>,
    options: Vec<String>,
}

impl SshCommand {
    /// `ssh` to `host` (a name from `~/.ssh/config` works), in batch mode: it never asks for a
    /// password or a host key confirmation, it fails instead.
    pub fn new(host: impl Into<String>) -> Self {
        SshCommand {
            program: PathBuf::from("ssh"),
            host: host.into(),
            user: None,
            port: None,
            identity: None,
            known_hosts: None,
            options: Vec::new(),
        }
    }

    /// The `ssh` program to run. Default `ssh` from `PATH`.
    pub fn program(mut self, program: impl Into<PathBuf>) -> Self {
        self.program = program.into();
        self
    }

    /// The remote user.
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// The port. Default 22 (or the SSH config's).
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// The private key file (`-i`).
    pub fn identity(mut self, key: impl Into<PathBuf>) -> Self {
        self.identity = Some(key.into());
        self
    }

    /// A `known_hosts` file holding the server's key (`UserKnownHostsFile`); host keys are always
    /// checked (`StrictHostKeyChecking=yes`).
    pub fn known_hosts(mut self, file: impl Into<PathBuf>) -> Self {
        self.known_hosts = Some(file.into());
        self
    }

    /// Another `-o` option, such as `ConnectTimeout=10`.
    pub fn option(mut self, option: impl Into<String>) -> Self {
        self.options.push(option.into());
        self
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command.args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"]);
        if let Some(port) = self.port {
            command.args(["-p", &port.to_string()]);
        }
        if let Some(user) = &self.user {
            command.args(["-l", user]);
        }
        if let Some(identity) = &self.identity {
            command.arg("-i").arg(identity);
            command.args(["-o", "IdentitiesOnly=yes"]);
        }
        if let Some(known_hosts) = &self.known_hosts {
            command
                .arg("-o")
                .arg(format!("UserKnownHostsFile={}", known_hosts.display()));
        }
        for option in &self.options {
            command.args(["-o", option]);
        }
        command.args(["-s", &self.host, "sftp"]);
        command
    }
}

/// A directory on an SFTP server.
pub struct Sftp {
    session: SftpSession,
    dir: String,
    label: String,
    // The `ssh` process the session runs over, killed when this is dropped.
    _child: Option<Child>,
}

impl fmt::Debug for Sftp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sftp")
            .field("remote", &self.label)
            .finish_non_exhaustive()
    }
}

impl Sftp {
    /// Starts `ssh` and opens an SFTP session on `dir` (an absolute path, or relative to the
    /// account's home).
    ///
    /// # Errors
    /// [`TransferError::Connect`] with `ssh`'s own message when it cannot start, authenticate or
    /// open the SFTP subsystem.
    pub async fn connect(ssh: &SshCommand, dir: impl Into<String>) -> Result<Sftp, TransferError> {
        let mut child = ssh
            .command()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                TransferError::Connect(format!(
                    "could not start `{}`: {e}; install the OpenSSH client or set `SshCommand::program`",
                    ssh.program.display()
                ))
            })?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(TransferError::Connect(
                "ssh's pipes were not opened".to_owned(),
            ));
        };
        // ssh's messages, drained as they come (a full pipe would stall ssh), the last few kept
        // for the error.
        let said = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let drain = tokio::spawn(drain_stderr(stderr, said.clone()));
        let dir = dir.into();
        let label = format!("sftp:{}:{dir}", ssh.host);
        match SftpSession::new(tokio::io::join(stdout, stdin)).await {
            Ok(session) => Ok(Sftp {
                session,
                dir,
                label,
                _child: Some(child),
            }),
            Err(error) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                let _ = tokio::time::timeout(std::time::Duration::from_secs(1), drain).await;
                let stderr = said
                    .lock()
                    .map(|said| said.trim().to_owned())
                    .unwrap_or_default();
                Err(TransferError::Connect(format!(
                    "could not open an SFTP session to `{}` ({error}); ssh said: {stderr}; check the host, the key and known_hosts",
                    ssh.host
                )))
            }
        }
    }

    /// An SFTP session over any byte stream already connected to an SFTP server (a russh
    /// channel with the `sftp` subsystem, a socket to a test server), on `dir`.
    ///
    /// # Errors
    /// [`TransferError::Connect`] when the SFTP handshake fails.
    pub async fn over<S>(stream: S, dir: impl Into<String>) -> Result<Sftp, TransferError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let dir = dir.into();
        let session = SftpSession::new(stream)
            .await
            .map_err(|e| TransferError::Connect(format!("SFTP handshake failed: {e}")))?;
        Ok(Sftp {
            label: format!("sftp:{dir}"),
            session,
            dir,
            _child: None,
        })
    }

    fn path(&self, name: &str) -> String {
        if self.dir.is_empty() {
            name.to_owned()
        } else {
            format!("{}/{name}", self.dir.trim_end_matches('/'))
        }
    }

    /// Closes the session.
    ///
    /// # Errors
    /// When the server does not answer the close.
    pub async fn close(self) -> Result<(), TransferError> {
        self.session.close().await.map_err(|e| TransferError::Sftp {
            operation: "close",
            path: self.dir.clone(),
            detail: e.to_string(),
        })
    }
}

/// Reads ssh's standard error to its end, keeping the last 4 KiB.
async fn drain_stderr(
    mut stderr: tokio::process::ChildStderr,
    said: std::sync::Arc<std::sync::Mutex<String>>,
) {
    use tokio::io::AsyncReadExt;
    let mut buffer = [0u8; 1024];
    while let Ok(n) = stderr.read(&mut buffer).await {
        if n == 0 {
            break;
        }
        if let Ok(mut said) = said.lock() {
            said.push_str(&String::from_utf8_lossy(&buffer[..n]));
            if said.len() > 4096 {
                let cut = said.len() - 4096;
                let cut = (cut..said.len())
                    .find(|i| said.is_char_boundary(*i))
                    .unwrap_or(0);
                said.drain(..cut);
            }
        }
    }
}

fn sftp_error<'a>(
    operation: &'static str,
    path: &'a str,
) -> impl FnOnce(russh_sftp::client::error::Error) -> TransferError + 'a {
    move |error| TransferError::Sftp {
        operation,
        path: path.to_owned(),
        detail: error.to_string(),
    }
}

#[async_trait]
impl Remote for Sftp {
    async fn list(&self) -> Result<Vec<String>, TransferError> {
        let entries = self
            .session
            .read_dir(self.dir.clone())
            .await
            .map_err(sftp_error("list", &self.dir))?;
        Ok(entries
            .map(|entry| entry.file_name())
            .filter(|name| !name.starts_with(TEMP_PREFIX) && name != "." && name != "..")
            .collect())
    }

    async fn upload(&self, local: &Path, name: &str) -> Result<(), TransferError> {
        let temp = self.path(&temp_name(name));
        let target = self.path(name);
        let mut source = tokio::fs::File::open(local)
            .await
            .map_err(crate::fsio::at(local))?;
        let mut file = self
            .session
            .create(temp.clone())
            .await
            .map_err(sftp_error("upload", &temp))?;
        let written = async {
            tokio::io::copy(&mut source, &mut file).await?;
            file.flush().await?;
            file.sync_all().await.map_err(std::io::Error::other)?;
            file.shutdown().await
        }
        .await;
        if let Err(error) = written {
            let _ = self.session.remove_file(temp.clone()).await;
            return Err(TransferError::Sftp {
                operation: "upload",
                path: temp,
                detail: error.to_string(),
            });
        }
        // SFTP's rename refuses an existing target (OpenSSH links then unlinks).
        if self
            .session
            .try_exists(target.clone())
            .await
            .unwrap_or(false)
        {
            self.session
                .remove_file(target.clone())
                .await
                .map_err(sftp_error("remove", &target))?;
        }
        self.session
            .rename(temp.clone(), target.clone())
            .await
            .map_err(sftp_error("rename", &target))
    }

    async fn download(&self, name: &str, local: &Path) -> Result<(), TransferError> {
        let path = self.path(name);
        let mut file = self
            .session
            .open(path.clone())
            .await
            .map_err(sftp_error("download", &path))?;
        let mut target = tokio::fs::File::create(local)
            .await
            .map_err(crate::fsio::at(local))?;
        tokio::io::copy(&mut file, &mut target)
            .await
            .map_err(|e| TransferError::Sftp {
                operation: "download",
                path: path.clone(),
                detail: e.to_string(),
            })?;
        target.flush().await?;
        Ok(())
    }

    fn describe(&self) -> String {
        self.label.clone()
    }
}
