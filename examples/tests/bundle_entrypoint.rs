//! The tool bundle's entry point (`examples/task-image/bundle-entrypoint.sh`, the job
//! container's entry point with job images), run with `sh` in a temporary bundle whose
//! `dropbear` and `dropbearkey` are stubs that record how they were called.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn task_image(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("task-image")
        .join(file)
}

fn write_exec(path: &Path, body: &str) {
    std::fs::write(path, body).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

struct Bundle {
    dir: tempfile::TempDir,
}

impl Bundle {
    /// A bundle with the real entry point and deadline script, `sh` from the system, and
    /// stub SSH tools; a `path` directory with the tools the script uses, and no bash.
    fn new() -> Bundle {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bundle/bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::copy(
            task_image("until-deadline.sh"),
            dir.path().join("bundle/until-deadline.sh"),
        )
        .unwrap();
        std::fs::copy(
            task_image("bundle-entrypoint.sh"),
            dir.path().join("bundle/entrypoint.sh"),
        )
        .unwrap();
        std::os::unix::fs::symlink("/bin/sh", bin.join("sh")).unwrap();
        write_exec(&bin.join("bash"), "#!/bin/sh\necho bundle-bash\n");
        // `-y -f FILE` prints the public part as dropbear's does; otherwise `-f FILE` makes it.
        write_exec(
            &bin.join("dropbearkey"),
            &format!(
                "#!/bin/sh\ncase \" $* \" in *' -y '*) printf 'Public key portion is:\\n{HOST_KEY} root@task\\nFingerprint: sha1!! x\\n'; exit 0 ;; esac\nwhile [ $# -gt 0 ]; do [ \"$1\" = -f ] && echo key > \"$2\"; shift; done\n"
            ),
        );
        let record = dir.path().join("dropbear-args");
        write_exec(
            &bin.join("dropbear"),
            &format!(
                "#!/bin/sh\nprintf '%s\\n' \"$@\" > '{}'\n",
                record.display()
            ),
        );
        let path = dir.path().join("path");
        std::fs::create_dir_all(&path).unwrap();
        for tool in [
            "dirname", "grep", "head", "mkdir", "ln", "rm", "cat", "sleep", "kill",
        ] {
            for prefix in ["/usr/bin", "/bin"] {
                let real = Path::new(prefix).join(tool);
                if real.exists() {
                    let _ = std::os::unix::fs::symlink(&real, path.join(tool));
                    break;
                }
            }
        }
        std::fs::write(dir.path().join("hosts"), "127.0.0.1\tlocalhost\n").unwrap();
        std::fs::create_dir_all(dir.path().join("links")).unwrap();
        Bundle { dir }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn run(&self, env: &[(&str, &str)]) -> Output {
        let mut c = Command::new("/bin/sh");
        c.arg(self.path("bundle/entrypoint.sh"))
            .env_clear()
            .env("PATH", self.path("path"))
            .env("FARGATE_HOSTS_FILE", self.path("hosts"))
            .env("FARGATE_LINK_DIRS", self.path("links"));
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBundle job";
/// What the stub `dropbearkey -y` prints as the host key's public part.
const HOST_KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyOfTheJobContainer";

#[test]
fn it_writes_the_hosts_links_bash_and_starts_the_ssh_server_on_its_port() {
    let b = Bundle::new();
    let env = [
        ("SSH_PUBLIC_KEY", KEY),
        ("FARGATE_SSH_PORT", "2222"),
        ("FARGATE_SERVICE_HOSTS", "db cache"),
    ];
    let out = b.run(&env);
    assert!(out.status.success(), "{}", stderr(&out));
    let hosts = std::fs::read_to_string(b.path("hosts")).unwrap();
    assert_eq!(
        hosts,
        "127.0.0.1\tlocalhost\n127.0.0.1\tdb\n127.0.0.1\tcache\n"
    );
    assert_eq!(
        std::fs::read_to_string(b.path("bundle/state/authorized_keys")).unwrap(),
        format!("{KEY}\n")
    );
    let mode = std::fs::metadata(b.path("bundle/state/authorized_keys"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "authorized_keys is private: {mode:o}");
    let args = std::fs::read_to_string(b.path("dropbear-args")).unwrap();
    let state = b.path("bundle/state").display().to_string();
    let host_key = format!("{state}/host_key");
    let expected: Vec<&str> = vec![
        "-F", "-E", "-s", "-j", "-k", "-p", "2222", "-r", &host_key, "-D", &state,
    ];
    assert_eq!(args.lines().collect::<Vec<_>>(), expected);
    // The host key is announced on stdout (the container's log stream) for the driver.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout, format!("fargate-host-key: {HOST_KEY}\n"));
    // The image has no bash on PATH: the bundle's is linked in.
    let link = std::fs::read_link(b.path("links/bash")).unwrap();
    assert_eq!(link, b.path("bundle/bin/bash"));
    assert!(
        stderr(&out).contains("the image has no bash"),
        "{}",
        stderr(&out)
    );
    // A restart adds no duplicate hosts line.
    let out = b.run(&env);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(b.path("hosts")).unwrap(), hosts);
}

#[test]
fn it_refuses_to_start_without_a_key_a_port_or_with_a_bad_host_name() {
    let b = Bundle::new();
    for (env, message) in [
        (
            vec![("FARGATE_SSH_PORT", "2222")],
            "SSH_PUBLIC_KEY is empty: the job container must be started by the fargate driver",
        ),
        (
            vec![("SSH_PUBLIC_KEY", KEY)],
            "FARGATE_SSH_PORT must be a port number, not ''",
        ),
        (
            vec![
                ("SSH_PUBLIC_KEY", KEY),
                ("FARGATE_SSH_PORT", "2222"),
                ("FARGATE_SERVICE_HOSTS", "db evil;name"),
            ],
            "service host name 'evil;name' is not a host name",
        ),
    ] {
        let out = b.run(&env);
        assert_eq!(out.status.code(), Some(1), "{env:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(message), "{env:?}: {}", stderr(&out));
        assert!(
            !b.path("dropbear-args").exists(),
            "the server started for {env:?}"
        );
    }
}
