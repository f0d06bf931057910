//! `explore` as a user meets it: the address it is given (a port in use, a
//! name, a non-loopback address), and the page it serves, read through the
//! Explorer's JSON API and, when Debian's `chromium` is installed, as
//! headless Chromium renders it after its JavaScript has run. The page is
//! opened at the deep link `trace --explore-link` prints.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};

fn vhost_race(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vhost-race")).args(args).output().expect("binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A running `explore`, killed when dropped.
struct Explorer {
    child: Child,
    /// `http://HOST:PORT/`, as the process printed it.
    url: String,
}

impl Explorer {
    fn start(args: &[&str]) -> Explorer {
        let mut child = Command::new(env!("CARGO_BIN_EXE_vhost-race"))
            .arg("explore")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("binary runs");
        let mut line = String::new();
        BufReader::new(child.stderr.take().unwrap()).read_line(&mut line).unwrap();
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no URL in {line:?}"))
            .to_string();
        Explorer { child, url }
    }

    /// GET `path` (after the `/`), the body.
    fn get(&self, path: &str) -> String {
        let host = self.url.trim_start_matches("http://").trim_end_matches('/');
        let mut s = TcpStream::connect(host).expect("the Explorer accepts");
        write!(s, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        assert!(resp.starts_with("HTTP/1.1 200") || resp.starts_with("HTTP/1.0 200"), "{resp}");
        resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()
    }
}

impl Drop for Explorer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_port_in_use_is_a_one_line_error_with_exit_code_2() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let o = vhost_race(&["explore", "--variant", "qemu-9.1", "--addr", &addr]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(&addr) && err.contains("in use"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn non_loopback_addresses_are_refused_in_one_line() {
    for addr in ["0.0.0.0:3000", "192.0.2.1:3000", "localhost"] {
        let o = vhost_race(&["explore", "--variant", "mutex", "--addr", addr]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{addr}: {err}");
        assert_eq!(err.lines().count(), 1, "{addr}: {err}");
        assert!(err.contains(addr), "{addr}: {err}");
    }
}

#[test]
fn a_host_name_that_resolves_to_loopback_is_served() {
    let e = Explorer::start(&["--variant", "mutex", "--addr", "localhost:0"]);
    assert!(e.url.starts_with("http://127.0.0.1:") || e.url.starts_with("http://[::1]:"));
    let status: serde_json::Value = serde_json::from_str(&e.get(".status")).unwrap();
    assert!(status["model"].as_str().unwrap().ends_with("ReplyRace"));
}

/// The fragment `trace --explore-link` prints for qemu-9.1's framing
/// counterexample, and the number of steps of its diagram.
fn framing_link() -> (String, usize) {
    let o =
        vhost_race(&["trace", "--variant", "qemu-9.1", "--property", "framing", "--explore-link"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    let steps = out
        .lines()
        .filter_map(|l| l.split('|').next()?.trim().parse::<usize>().ok())
        .max()
        .expect("numbered steps");
    let link = out.lines().find(|l| l.starts_with("http://127.0.0.1:3000/#/steps/")).expect("link");
    let fragment = link.trim_start_matches("http://127.0.0.1:3000/").to_string();
    (fragment, steps)
}

const QEMU_LINE: &str = "qemu-kvm: vhost_user_read_header: 4100,4133: Failed to read msg header. Flags 0x0 instead of 0x5.";

#[test]
fn the_deep_link_opens_the_shortest_counterexample_described_as_the_cli_does() {
    let (fragment, steps) = framing_link();
    let indices: Vec<&str> = fragment.trim_start_matches("#/steps/").split('/').collect();
    assert_eq!(indices.len(), 1 + steps, "the init state, then one index per diagram step");
    let e = Explorer::start(&["--variant", "qemu-9.1", "--addr", "127.0.0.1:0"]);
    // The Explorer's API: the steps from the state before the last one.
    let (prefix, last) = indices.split_at(indices.len() - 1);
    let next: serde_json::Value =
        serde_json::from_str(&e.get(&format!(".states/{}", prefix.join("/")))).unwrap();
    let step = next
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["actionIndex"].as_u64() == last[0].parse().ok())
        .expect("the link's last action");
    let outcome = step["outcome"].as_str().unwrap();
    assert!(
        outcome.starts_with("qemu-9.1 · device start: 2 IOTLB updates under the BQL"),
        "{outcome}"
    );
    assert!(outcome.contains("step: postcopy listen: vhost_user_read_header logs the failed check"));
    assert!(outcome.contains(&format!("logs: {QEMU_LINE}")), "{outcome}");
    assert!(outcome.contains("VIOLATES:") && outcome.contains("no header is read mid-message"));
    let svg = step["svg"].as_str().unwrap();
    assert!(svg.starts_with("<svg"), "{svg}");
    assert!(svg.contains("read header [0 0 1e] flags 0x0 &lt;-"), "{svg}");
    assert!(svg.contains(QEMU_LINE));
    assert!(svg.contains("✗ violates: no header is read mid-message (framing)"));
}

#[test]
fn headless_chromium_shows_variant_svg_and_qemu_line() {
    let Some(chromium) = ["chromium", "chromium-browser"].into_iter().find(|c| {
        Command::new("sh")
            .args(["-c", &format!("command -v {c}")])
            .output()
            .is_ok_and(|o| o.status.success())
    }) else {
        println!("skipped: chromium is not installed (apt-get install chromium)");
        return;
    };
    let (fragment, _) = framing_link();
    let e = Explorer::start(&["--variant", "qemu-9.1", "--addr", "127.0.0.1:0"]);
    let profile = std::env::temp_dir().join(format!("vhost-race-chromium-{}", std::process::id()));
    let o = Command::new("timeout")
        .arg("120")
        .arg(chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=20000"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(format!("{}{fragment}", e.url))
        .output()
        .expect("chromium runs");
    let _ = std::fs::remove_dir_all(&profile);
    let dom = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "chromium: {}", String::from_utf8_lossy(&o.stderr));
    assert!(dom.contains("qemu-9.1 · device start: 2 IOTLB updates"), "{dom}");
    assert!(dom.contains("<svg"), "{dom}");
    assert!(dom.contains(QEMU_LINE), "{dom}");
    assert!(dom.contains("violates: no header is read mid-message"), "{dom}");
}
