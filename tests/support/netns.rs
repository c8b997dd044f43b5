//! Two "hosts" on one machine: the root network namespace and a fresh one joined by a veth pair
//! (needs root; a test without it is skipped with a message saying so).

use std::process::Command;

fn ip(args: &[&str]) -> std::io::Result<std::process::Output> {
    Command::new("ip").args(args).output()
}

/// A namespace linked to the root one by a veth pair: `10.<a>.<b>.1` on the root side,
/// `.2` inside. Removed (with the pair) when dropped.
pub struct Namespace {
    pub name: String,
    /// The veth end inside.
    pub inner_link: String,
    pub root_address: String,
    pub inner_address: String,
}

impl Namespace {
    /// None (after saying why) when this machine does not let the test create one.
    /// `test` (0, 1, ...) tells apart the namespaces of the tests running at once.
    pub fn create(test: u32) -> Option<Self> {
        let id = std::process::id();
        let name = format!("crowdpulse-{id}-{test}");
        let (outer, inner) = (
            format!("cpa{}-{test}", id % 100_000),
            format!("cpb{}-{test}", id % 100_000),
        );
        let subnet = format!("10.{}.{}", 100 + 50 * test + (id >> 8) % 50, id % 256);
        let namespace = Self {
            name: name.clone(),
            inner_link: inner.clone(),
            root_address: format!("{subnet}.1"),
            inner_address: format!("{subnet}.2"),
        };
        let steps: [Vec<String>; 7] = [
            vec!["netns".into(), "add".into(), name.clone()],
            vec![
                "link", "add", &outer, "type", "veth", "peer", "name", &inner,
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            vec![
                "link".into(),
                "set".into(),
                inner.clone(),
                "netns".into(),
                name.clone(),
            ],
            vec![
                "addr".into(),
                "add".into(),
                format!("{subnet}.1/24"),
                "dev".into(),
                outer.clone(),
            ],
            vec!["link".into(), "set".into(), outer.clone(), "up".into()],
            vec![
                "-n".into(),
                name.clone(),
                "addr".into(),
                "add".into(),
                format!("{subnet}.2/24"),
                "dev".into(),
                inner.clone(),
            ],
            vec![
                "-n".into(),
                name.clone(),
                "link".into(),
                "set".into(),
                inner.clone(),
                "up".into(),
            ],
        ];
        for step in steps {
            let args: Vec<&str> = step.iter().map(String::as_str).collect();
            match ip(&args) {
                Ok(out) if out.status.success() => {}
                Ok(out) => {
                    eprintln!(
                        "SKIPPED: `ip {}` failed ({}); creating network namespaces needs root",
                        args.join(" "),
                        String::from_utf8_lossy(&out.stderr).trim()
                    );
                    return None;
                }
                Err(error) => {
                    eprintln!("SKIPPED: cannot run `ip` ({error}): iproute2 is not installed");
                    return None;
                }
            }
        }
        let _ = ip(&["-n", &name, "link", "set", "lo", "up"]);
        Some(namespace)
    }
}

impl Namespace {
    /// Takes the inner end of the link down: the "hosts" lose each other without any
    /// connection being closed.
    pub fn cut(&self) {
        let cut = ip(&["-n", &self.name, "link", "set", &self.inner_link, "down"]).unwrap();
        assert!(cut.status.success(), "{cut:?}");
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth pair with it.
        let _ = ip(&["netns", "del", &self.name]);
    }
}
