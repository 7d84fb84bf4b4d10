//! Rootless Podman, beyond the shared conformance scenarios: who owns what a job writes, and
//! what of the launching user's home a job can reach.
//!
//! Needs the rootless service that `.ci/podman-setup` starts (its env file names the socket,
//! the user and the image). The test process runs as root and talks to the user's socket;
//! workspaces live in a fresh world-readable directory under /tmp, the job directory owned by
//! that user. Without the service: a failure when `CI` is set, ignored otherwise.

#[path = "support/podman.rs"]
mod podman_support;
mod support;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use mount_plan::{HostPath, Layout};
use mount_plan_host::{verify, JobDir, VerifiedPlan, VerifyOptions};
use mount_plan_launch::{Engine, LaunchSpec, OutputStream};
use mount_plan_podman::UserNamespace;
use podman_support::{Mode, RootlessUser};

/// The rootless service's user and the full busybox image `.ci/podman-setup` imported (these
/// checks need `grep`, which the probe image lacks).
struct Rootless {
    uid: u32,
    gid: u32,
    home: PathBuf,
    image: String,
}

/// The rootless runtime with `userns`, and its user; `None`: skipped (a panic under `CI`).
async fn rootless(userns: UserNamespace) -> Option<(Box<dyn Engine>, Rootless)> {
    let service = podman_support::service(Mode::Rootless)?;
    let rt = podman_support::runtime(&service, userns).await?;
    let RootlessUser { uid, gid, home, .. } = service.user.expect("rootless user");
    let image = podman_support::setting("MOUNT_PLAN_PODMAN_IMAGE")
        .unwrap_or_else(|_| "localhost/mount-plan-busybox:latest".to_owned());
    Some((
        Box::new(rt),
        Rootless {
            uid,
            gid,
            home,
            image,
        },
    ))
}

/// A workspace the rootless user can reach: W world-readable (0755, root's), the shared
/// directories root's, W/J owned by the user (0700).
struct Workspace {
    dir: tempfile::TempDir,
    plan: VerifiedPlan,
}

impl Workspace {
    fn new(job: &str, r: &Rootless) -> Workspace {
        let dir = tempfile::Builder::new()
            .prefix("mp-podman-rootless-")
            .tempdir_in("/tmp")
            .unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        for shared in ["startup", "local"] {
            let p = dir.path().join(shared);
            fs::create_dir(&p).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        }
        fs::write(dir.path().join("startup/site.cfg"), "site config\n").unwrap();
        let job_dir = dir.path().join(job);
        fs::create_dir(&job_dir).unwrap();
        std::os::unix::fs::chown(&job_dir, Some(r.uid), Some(r.gid)).unwrap();
        fs::set_permissions(&job_dir, fs::Permissions::from_mode(0o700)).unwrap();
        let layout = Layout::default();
        let workspace = HostPath::parse(dir.path().to_str().unwrap()).unwrap();
        let plan = layout.plan(&workspace, &layout.job(job).unwrap()).unwrap();
        let plan = verify(
            plan,
            &VerifyOptions {
                job_dir: JobDir::MustExist,
                ..VerifyOptions::default()
            },
        )
        .unwrap();
        Workspace { dir, plan }
    }

    fn job_dir(&self) -> PathBuf {
        self.dir.path().join(self.plan.plan().job().as_str())
    }
}

/// Launch, collect stdout, wait, remove. Returns (exit code, stdout).
async fn run(rt: &dyn Engine, ws: &Workspace, image: &str, script: &str) -> (i64, String) {
    let spec = LaunchSpec::new(image.parse().unwrap()).with_command(["sh", "-c", script]);
    let mut out = Vec::new();
    let mut sink = |c: &mount_plan_launch::LogChunk| {
        if c.stream == OutputStream::Stdout {
            out.extend_from_slice(&c.bytes);
        }
    };
    let done = mount_plan_launch::launch(rt, &ws.plan, &spec, &Default::default(), &mut sink)
        .await
        .map_err(|f| f.error)
        .unwrap();
    (done.status.code, String::from_utf8_lossy(&out).into_owned())
}

async fn keep_id_job_output_is_owned_by_the_launching_user() {
    let Some((rt, r)) = rootless(UserNamespace::KeepId).await else {
        return;
    };
    let ws = Workspace::new("job-keep-id", &r);
    let (code, out) = run(
        rt.as_ref(),
        &ws,
        &r.image,
        "id -u; id -g; echo result > out.txt; mkdir sub && echo deeper > sub/f",
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let ids: Vec<&str> = out.lines().collect();
    assert_eq!(
        ids,
        [r.uid.to_string(), r.gid.to_string()],
        "in-container ids"
    );
    for rel in ["out.txt", "sub", "sub/f"] {
        let meta = fs::metadata(ws.job_dir().join(rel)).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid()),
            (r.uid, r.gid),
            "{rel} on the host is not owned by the launching user"
        );
    }
    assert_eq!(
        fs::read_to_string(ws.job_dir().join("out.txt")).unwrap(),
        "result\n"
    );
}

async fn default_userns_root_in_the_container_is_the_launching_user_on_the_host() {
    let Some((rt, r)) = rootless(UserNamespace::EngineDefault).await else {
        return;
    };
    let ws = Workspace::new("job-default-userns", &r);
    let (code, out) = run(rt.as_ref(), &ws, &r.image, "id -u; echo x > out.txt").await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.trim(), "0", "the command runs as root in the container");
    let meta = fs::metadata(ws.job_dir().join("out.txt")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (r.uid, r.gid));
}

/// `major:minor` of the filesystem holding `path`, as mountinfo writes it.
fn dev_of(path: &Path) -> String {
    let dev = fs::metadata(path).unwrap().dev();
    let major = ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff);
    let minor = ((dev >> 12) & 0xffff_ff00) | (dev & 0xff);
    format!("{major}:{minor}")
}

async fn a_job_cannot_see_or_write_the_rest_of_the_users_home() {
    let Some((rt, r)) = rootless(UserNamespace::KeepId).await else {
        return;
    };
    let ws = Workspace::new("job-home", &r);
    // A file only the launching user can read, in its home: the job runs as that user, so
    // only the mount namespace stands between the job and this file.
    let secret = support::unique("mp-secret");
    let marker = r.home.join(format!(".{secret}"));
    fs::write(&marker, format!("{secret}\n")).unwrap();
    std::os::unix::fs::chown(&marker, Some(r.uid), Some(r.gid)).unwrap();
    fs::set_permissions(&marker, fs::Permissions::from_mode(0o600)).unwrap();
    let before = fs::metadata(&marker).unwrap();

    // The needle is split so that the script itself does not contain it.
    let (head, tail) = secret.split_at(4);
    let script = format!(
        "n={head}; n=\"$n{tail}\"; \
         for d in /*; do case $d in /proc|/sys|/dev) ;; *) grep -rlsF \"$n\" \"$d\";; esac; done; \
         echo '--mountinfo'; cat /proc/self/mountinfo; echo '--writes'; \
         for p in {home} {home}/.{secret} /home /root; do \
           if echo pwned > \"$p\" 2>/dev/null || touch \"$p/pwned\" 2>/dev/null; then echo \"wrote $p\"; fi; \
         done; true",
        home = r.home.display(),
    );
    let (code, out) = run(rt.as_ref(), &ws, &r.image, &script).await;
    assert_eq!(code, 0, "{out}");
    let (found, rest) = out.split_once("--mountinfo\n").expect("mountinfo section");
    let (mountinfo, writes) = rest.split_once("--writes\n").expect("writes section");
    assert_eq!(found.trim(), "", "the job found the secret in these files");
    assert_eq!(writes.trim(), "", "the job wrote outside its mounts");

    // Every mount from the filesystem holding the home must be a planned bind, the
    // container's own root filesystem in the user's container storage, or Podman's
    // per-container files (hosts, hostname, .containerenv) in the user's runtime dir.
    let home_dev = dev_of(&r.home);
    let planned: BTreeSet<String> = ws
        .plan
        .plan()
        .binds()
        .map(|b| b.source().as_str().to_owned())
        .collect();
    let storage = r.home.join(".local/share/containers/storage/");
    let runtime = format!("/run/user/{}/containers/", r.uid);
    let mut seen_planned = BTreeSet::new();
    for line in mountinfo.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() < 5 || f[2] != home_dev {
            continue;
        }
        let root = f[3];
        if planned.contains(root) {
            seen_planned.insert(root.to_owned());
            continue;
        }
        // The gate's host copy, bound read-only at its path outside R (checked by the audit
        // and by the gate itself; the launcher's own file, not the user's).
        if f[4] == mount_plan_launch::gate::GATE_PATH
            && root == mount_plan_launch::gate_copy::expected_source()
        {
            continue;
        }
        assert!(
            root.starts_with(storage.to_str().unwrap()) || root.starts_with(&runtime),
            "the job sees host path {root:?} at {:?}",
            f[4]
        );
    }
    assert_eq!(seen_planned, planned, "every planned bind is mounted");

    let after = fs::metadata(&marker).unwrap();
    assert_eq!(fs::read_to_string(&marker).unwrap(), format!("{secret}\n"));
    assert_eq!(before.mtime_nsec(), after.mtime_nsec());
    assert!(!r.home.join("pwned").exists());
    fs::remove_file(&marker).unwrap();
}

/// Quick jobs, one after another: every one returns all its output and its exit code.
/// Podman 4.3's followed log waits for a "died" event that it can miss when the command
/// exits at once; the backend must neither hang nor lose output then.
async fn quick_jobs_return_all_output_and_never_hang() {
    let Some((rt, r)) = rootless(UserNamespace::KeepId).await else {
        return;
    };
    let ws = Workspace::new("job-quick", &r);
    for i in 0..12 {
        let script = format!("echo out-{i}; echo err-{i} >&2; exit {}", i % 3);
        let spec = LaunchSpec::new(r.image.parse().unwrap()).with_command(["sh", "-c", &script]);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let status = {
            let mut sink = |c: &mount_plan_launch::LogChunk| match c.stream {
                OutputStream::Stdout => out.extend_from_slice(&c.bytes),
                OutputStream::Stderr => err.extend_from_slice(&c.bytes),
            };
            let options = mount_plan_launch::LaunchOptions::default();
            let run = mount_plan_launch::launch(rt.as_ref(), &ws.plan, &spec, &options, &mut sink);
            match tokio::time::timeout(std::time::Duration::from_secs(30), run).await {
                Err(_) => panic!("job {i} hung"),
                Ok(Err(failed)) => panic!("job {i}: {}", failed.error),
                Ok(Ok(done)) => done.status,
            }
        };
        assert_eq!(status.code, i % 3, "job {i}");
        assert_eq!(
            String::from_utf8_lossy(&out),
            format!("out-{i}\n"),
            "job {i}"
        );
        assert_eq!(
            String::from_utf8_lossy(&err),
            format!("err-{i}\n"),
            "job {i}"
        );
    }
}

fn main() {
    use mount_plan_testkit::harness::{self, Need, Runtime};
    const ROOTLESS: &[Need] = &[Need::PodmanRootless, Need::Root];
    harness::run(vec![
        harness::tokio(
            Runtime::CurrentThread,
            "keep_id_job_output_is_owned_by_the_launching_user",
            ROOTLESS,
            keep_id_job_output_is_owned_by_the_launching_user,
        ),
        harness::tokio(
            Runtime::CurrentThread,
            "default_userns_root_in_the_container_is_the_launching_user_on_the_host",
            ROOTLESS,
            default_userns_root_in_the_container_is_the_launching_user_on_the_host,
        ),
        harness::tokio(
            Runtime::CurrentThread,
            "a_job_cannot_see_or_write_the_rest_of_the_users_home",
            ROOTLESS,
            a_job_cannot_see_or_write_the_rest_of_the_users_home,
        ),
        harness::tokio(
            Runtime::CurrentThread,
            "quick_jobs_return_all_output_and_never_hang",
            ROOTLESS,
            quick_jobs_return_all_output_and_never_hang,
        ),
    ]);
}
