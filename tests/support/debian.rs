//! Debian tools the tests drive (`promtool`, `haproxy`, `systemd-analyze`): found on the PATH,
//! or installed with apt-get. A test that needs a real tool fails, never skips, when it cannot
//! be had.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// The executable `binary`, from Debian's `package`, installed if it is missing.
pub fn debian_tool(binary: &str, package: &str) -> PathBuf {
    // One apt-get at a time: tests run in parallel, and dpkg takes a lock.
    static INSTALL: Mutex<()> = Mutex::new(());
    let _one_at_a_time = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    let find = || {
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
            .map(|d| d.join(binary))
            .find(|p| p.is_file())
    };
    if let Some(p) = find() {
        return p;
    }
    let sudo = if unsafe { libc::geteuid() } == 0 {
        None
    } else {
        Some("sudo")
    };
    let apt = |args: &[&str]| {
        let mut all: Vec<&str> = sudo.into_iter().collect();
        all.push("apt-get");
        all.extend(args);
        Command::new(all[0])
            .args(&all[1..])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let install = ["install", "-y", "--no-install-recommends", package];
    if !apt(&install) {
        apt(&["update", "-qq"]);
        apt(&install);
    }
    find().unwrap_or_else(|| {
        panic!("{binary} is missing and `apt-get install {package}` did not provide it")
    })
}
