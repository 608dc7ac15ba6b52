//! Transfer keeps the marker last end to end: over a directory (local or mounted) and over SFTP
//! to an OpenSSH server started by the test on a loopback port.

mod common;

use async_trait::async_trait;
use common::*;
use herald::{async_handler, HandlerError, Herald, State};
use herald_batch::sftp::{Sftp, SshCommand};
use herald_batch::transfer::{self, Directory, Remote, TransferError};
use herald_batch::{BatchId, ImportOutcome};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[async_handler]
async fn book_invoice(
    invoice: Invoice,
    State(effects): State<Effects>,
) -> Result<(), HandlerError> {
    effects.0.lock().expect("effects").push(invoice.id);
    Ok(())
}

fn herald(effects: &Effects) -> Herald {
    Herald::builder()
        .handlers_under(module_path!())
        .state(effects.clone())
        .build()
        .expect("herald")
}

/// A remote that records what was uploaded and downloaded, in order.
#[derive(Debug)]
struct Recording<R> {
    inner: R,
    log: Arc<Mutex<Vec<String>>>,
}

#[async_trait]
impl<R: Remote> Remote for Recording<R> {
    async fn list(&self) -> Result<Vec<String>, TransferError> {
        self.inner.list().await
    }
    async fn upload(&self, local: &Path, name: &str) -> Result<(), TransferError> {
        self.inner.upload(local, name).await?;
        self.log.lock().expect("log").push(format!("up {name}"));
        Ok(())
    }
    async fn download(&self, name: &str, local: &Path) -> Result<(), TransferError> {
        self.inner.download(name, local).await?;
        self.log.lock().expect("log").push(format!("down {name}"));
        Ok(())
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

#[tokio::test]
async fn a_batch_travels_through_a_directory_marker_last_both_ways() {
    let dirs = Dirs::new();
    let shared = dirs.root.path().join("shared");
    std::fs::create_dir_all(&shared).expect("shared");
    let log = Arc::new(Mutex::new(Vec::new()));
    let remote = Recording {
        inner: Directory::new(&shared),
        log: log.clone(),
    };

    let batch = dirs
        .exporter(&dirs.out)
        .export("via-dir", invoices(4))
        .expect("export");
    transfer::send(&batch, &remote).await.expect("send");
    // Sending it again is refused: the remote has its marker.
    assert!(matches!(
        transfer::send(&batch, &remote).await,
        Err(TransferError::AlreadySent { .. })
    ));
    let fetched = transfer::fetch(&remote, &dirs.inbox).await.expect("fetch");
    assert_eq!(fetched, vec![BatchId::new("via-dir").expect("id")]);
    assert!(transfer::fetch(&remote, &dirs.inbox)
        .await
        .expect("again")
        .is_empty());
    assert_eq!(
        *log.lock().expect("log"),
        [
            "up via-dir.jsonl",
            "up via-dir.manifest.json",
            "up via-dir.done",
            // The marker is read first (to a temporary name) and put in place last.
            "down via-dir.done",
            "down via-dir.manifest.json",
            "down via-dir.jsonl",
            // The second fetch reads the marker, finds it unchanged and fetches nothing.
            "down via-dir.done",
        ]
    );

    let effects = Effects::default();
    let herald = herald(&effects);
    let importer = dirs.importer(&herald);
    let receipt = imported(importer.import("via-dir").await.expect("import"));
    assert_eq!((receipt.records, receipt.succeeded), (4, 4));
    transfer::send_receipt(&remote, importer.receipts(), &batch.batch_id)
        .await
        .expect("receipt back");
    assert!(receipt_exists(&shared, "via-dir"));
    assert_eq!(effects.ids(), vec![1, 2, 3, 4]);
}

#[tokio::test]
async fn a_batch_refused_then_sent_again_is_fetched_again_and_imported() {
    let dirs = Dirs::new();
    let shared = dirs.root.path().join("shared");
    let resend_out = dirs.root.path().join("resend");
    std::fs::create_dir_all(&shared).expect("shared");
    std::fs::create_dir_all(&resend_out).expect("resend");
    let remote = Directory::new(&shared);
    let effects = Effects::default();
    let herald = herald(&effects);
    let importer = dirs.importer(&herald);

    // The KISA send: the data file is there, but empty.
    let first = dirs
        .exporter(&dirs.out)
        .export("daily", invoices(3))
        .expect("export");
    std::fs::write(&first.data_path, b"").expect("empty");
    transfer::send(&first, &remote).await.expect("send");
    transfer::fetch(&remote, &dirs.inbox).await.expect("fetch");
    let outcomes = importer.poll().await.expect("poll");
    assert!(
        matches!(outcomes[..], [(_, ImportOutcome::Rejected(_))]),
        "{outcomes:?}"
    );
    assert!(effects.ids().is_empty());

    // The partner sends it again under the same id: marker removed first, then the three files.
    std::fs::remove_file(shared.join("daily.done")).expect("withdraw the marker");
    let again = dirs
        .exporter(&resend_out)
        .export("daily", invoices(3))
        .expect("export again");
    transfer::send(&again, &remote).await.expect("send again");
    assert_eq!(
        transfer::fetch(&remote, &dirs.inbox)
            .await
            .expect("fetch again")
            .len(),
        1
    );
    let outcomes = importer.poll().await.expect("poll again");
    let [(_, ImportOutcome::Imported(receipt))] = &outcomes[..] else {
        panic!("not imported: {outcomes:?}");
    };
    assert_eq!((receipt.records, receipt.succeeded), (3, 3));
    assert_eq!(effects.ids(), vec![1, 2, 3]);
    // Once its receipt is on the share, the batch is not fetched again.
    transfer::send_receipt(&remote, importer.receipts(), &again.batch_id)
        .await
        .expect("receipt");
    std::fs::remove_file(dirs.inbox.join("daily.done")).expect("local clean-up");
    assert!(transfer::fetch(&remote, &dirs.inbox)
        .await
        .expect("fetch")
        .is_empty());
}

#[tokio::test]
async fn a_marker_fetched_without_its_data_is_refused_on_import() {
    let dirs = Dirs::new();
    let shared = dirs.root.path().join("shared");
    std::fs::create_dir_all(&shared).expect("shared");
    let batch = dirs
        .exporter(&shared)
        .export("no-data", invoices(2))
        .expect("export");
    std::fs::remove_file(&batch.data_path).expect("the partner lost the data file");
    transfer::fetch(&Directory::new(&shared), &dirs.inbox)
        .await
        .expect("fetch");
    let effects = Effects::default();
    let herald = herald(&effects);
    let outcome = dirs
        .importer(&herald)
        .import("no-data")
        .await
        .expect("import");
    assert!(matches!(outcome, ImportOutcome::Rejected(_)), "{outcome:?}");
    assert!(effects.ids().is_empty());
    assert_eq!(dead_letters(&herald).await.len(), 1);
}

/// An OpenSSH server on 127.0.0.1, for this test only, killed on drop.
struct Sshd {
    child: Child,
    port: u16,
    client_key: PathBuf,
    known_hosts: PathBuf,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(command: &mut Command) {
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(status.success(), "{command:?} failed");
}

impl Sshd {
    fn start(dir: &Path) -> Sshd {
        let sshd = Path::new("/usr/sbin/sshd");
        assert!(
            sshd.exists(),
            "the SFTP test needs OpenSSH's server: `apt-get install -y openssh-server` (.ci/run does it)"
        );
        // Privilege separation wants its empty directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        let host_key = dir.join("host_key");
        let client_key = dir.join("client_key");
        for key in [&host_key, &client_key] {
            run(Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(key));
        }
        std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys"))
            .expect("authorized_keys");
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("a free port")
            .local_addr()
            .expect("addr")
            .port();
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {host}\nPidFile {pid}\n\
                 AuthorizedKeysFile {keys}\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
                 PermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\nLogLevel ERROR\n",
                host = host_key.display(),
                pid = dir.join("sshd.pid").display(),
                keys = dir.join("authorized_keys").display(),
            ),
        )
        .expect("sshd_config");
        let host_public = std::fs::read_to_string(dir.join("host_key.pub")).expect("host key");
        let known_hosts = dir.join("known_hosts");
        std::fs::write(&known_hosts, format!("[127.0.0.1]:{port} {host_public}"))
            .expect("known_hosts");
        let child = Command::new(sshd)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sshd");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "sshd did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Sshd {
            child,
            port,
            client_key,
            known_hosts,
        }
    }

    fn command(&self) -> SshCommand {
        let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
        SshCommand::new("127.0.0.1")
            .port(self.port)
            .user(user)
            .identity(&self.client_key)
            .known_hosts(&self.known_hosts)
            .option("ConnectTimeout=10")
    }
}

#[tokio::test]
async fn a_batch_round_trips_over_sftp_on_a_loopback_server() {
    let dirs = Dirs::new();
    let ssh_dir = dirs.root.path().join("ssh");
    let remote_dir = dirs.root.path().join("remote");
    std::fs::create_dir_all(&ssh_dir).expect("ssh dir");
    std::fs::create_dir_all(&remote_dir).expect("remote dir");
    let sshd = Sshd::start(&ssh_dir);
    let remote_path = remote_dir.display().to_string();

    // The sender's session: data, manifest, marker.
    let batch = dirs
        .exporter(&dirs.out)
        .export("via-sftp", invoices(7))
        .expect("export");
    let sender = Sftp::connect(&sshd.command(), remote_path.clone())
        .await
        .expect("sender connects");
    transfer::send(&batch, &sender)
        .await
        .expect("send over SFTP");
    let mut on_server: Vec<String> = std::fs::read_dir(&remote_dir)
        .expect("remote dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    on_server.sort();
    assert_eq!(
        on_server,
        ["via-sftp.done", "via-sftp.jsonl", "via-sftp.manifest.json"]
    );
    for name in &on_server {
        assert_eq!(
            std::fs::read(remote_dir.join(name)).expect("on server"),
            std::fs::read(dirs.out.join(name)).expect("local"),
            "{name} changed in transfer"
        );
    }
    sender.close().await.expect("close");

    // The receiver's session: fetch once the marker is there, import, send the receipt back.
    let receiver = Sftp::connect(&sshd.command(), remote_path)
        .await
        .expect("receiver connects");
    let fetched = transfer::fetch(&receiver, &dirs.inbox)
        .await
        .expect("fetch over SFTP");
    assert_eq!(fetched, vec![batch.batch_id.clone()]);
    let effects = Effects::default();
    let herald = herald(&effects);
    let importer = dirs.importer(&herald);
    let receipt = imported(importer.import("via-sftp").await.expect("import"));
    assert_eq!(
        (receipt.records, receipt.succeeded, receipt.dead_lettered),
        (7, 7, 0)
    );
    transfer::send_receipt(&receiver, importer.receipts(), &batch.batch_id)
        .await
        .expect("receipt back");
    assert!(receipt_exists(&remote_dir, "via-sftp"));
    assert_eq!(effects.ids(), (1..=7).collect::<Vec<_>>());
    receiver.close().await.expect("close");
}

#[tokio::test]
async fn an_sftp_connection_that_fails_says_why() {
    let dirs = Dirs::new();
    let ssh_dir = dirs.root.path().join("ssh");
    std::fs::create_dir_all(&ssh_dir).expect("ssh dir");
    let sshd = Sshd::start(&ssh_dir);
    // The server's key is not the one known: ssh refuses, and the error carries its words.
    std::fs::write(&sshd.known_hosts, "").expect("forget the host key");
    let error = Sftp::connect(&sshd.command(), "/tmp")
        .await
        .expect_err("must not connect");
    let text = error.to_string();
    assert!(matches!(error, TransferError::Connect(_)), "{text}");
    assert!(text.contains("Host key verification failed"), "{text}");
}
