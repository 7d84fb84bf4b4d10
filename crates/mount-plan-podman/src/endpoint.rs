//! Where a Podman service listens. Pure: unit-tested without a service.

use crate::error::PodmanError;

/// Where a rootful service listens by convention.
pub const ROOTFUL_SOCKET: &str = "/run/podman/podman.sock";

/// The socket to use when none is given: `$CONTAINER_HOST` when set (Podman's own variable);
/// else, for root, the rootful [`ROOTFUL_SOCKET`]; else `$XDG_RUNTIME_DIR/podman/podman.sock`
/// (`/run/user/<uid>` when `XDG_RUNTIME_DIR` is unset).
pub fn default_endpoint(
    container_host: Option<&str>,
    euid: u32,
    xdg_runtime_dir: Option<&str>,
) -> String {
    if let Some(host) = container_host.filter(|h| !h.is_empty()) {
        return host.to_owned();
    }
    if euid == 0 {
        return format!("unix://{ROOTFUL_SOCKET}");
    }
    match xdg_runtime_dir.filter(|d| d.starts_with('/')) {
        Some(dir) => format!("unix://{}/podman/podman.sock", dir.trim_end_matches('/')),
        None => format!("unix:///run/user/{euid}/podman/podman.sock"),
    }
}

/// The socket path of an endpoint: `unix:///abs/path` or a bare absolute path.
pub fn socket_path(endpoint: &str) -> Result<&str, PodmanError> {
    let path = endpoint.strip_prefix("unix://").unwrap_or(endpoint);
    if !path.starts_with('/') || path.contains('\0') {
        return Err(PodmanError::Endpoint {
            value: endpoint.to_owned(),
        });
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            default_endpoint(None, 0, Some("/run/user/0")),
            "unix:///run/podman/podman.sock"
        );
        assert_eq!(
            default_endpoint(None, 1001, Some("/run/user/1001/")),
            "unix:///run/user/1001/podman/podman.sock"
        );
        assert_eq!(
            default_endpoint(None, 1001, None),
            "unix:///run/user/1001/podman/podman.sock"
        );
        assert_eq!(
            default_endpoint(Some("unix:///x.sock"), 0, None),
            "unix:///x.sock"
        );
        assert_eq!(socket_path("unix:///run/p.sock").unwrap(), "/run/p.sock");
        assert_eq!(socket_path("/run/p.sock").unwrap(), "/run/p.sock");
        for bad in ["tcp://127.0.0.1:8080", "unix://relative", "", "ssh://h/x"] {
            assert_eq!(
                socket_path(bad).unwrap_err().rule(),
                "podman-endpoint",
                "{bad}"
            );
        }
    }
}
