//! Telling systemd how the service is doing (`Type=notify`, sd_notify(3)): a datagram to the
//! socket named in `NOTIFY_SOCKET`, when there is one; otherwise nothing.

use std::os::unix::net::UnixDatagram;

/// Sends `state` (`READY=1`, `STOPPING=1`, `STATUS=…`, one per line) to the service manager.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = UnixDatagram::unbound().and_then(|socket| {
        let path = path.to_string_lossy();
        match path.strip_prefix('@') {
            // An abstract socket: its name follows a NUL byte.
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                socket.send_to_addr(state.as_bytes(), &address)
            }
            None => socket.send_to(state.as_bytes(), &*path),
        }
    });
    if let Err(e) = sent {
        tracing::warn!(error = %e, "cannot notify the service manager");
    }
}
