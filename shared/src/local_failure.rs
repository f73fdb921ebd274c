//! The gateway's own resource failures, told apart from a provider's (STYLE rule 15: a
//! local failure is never blamed on a remote party). A call that fails because this
//! process is out of file descriptors, ephemeral ports or memory, or because the DNS
//! resolver it relies on cannot answer, says nothing about the provider: it never counts
//! toward the provider's circuit breaker, its health (probe or passive signal) or a BYOK
//! key's state, and the client gets a 503 `service_unavailable`, not a 502.
//!
//! [`LocalFailure::find`] walks an error's source chain (reqwest → hyper-util → the
//! connector's `io::Error`) and classifies the first `io::Error` it recognises:
//!
//! | error | failure |
//! |---|---|
//! | `EMFILE`, `ENFILE` (too many open files, in the process or the system) | `file_descriptors` |
//! | `EADDRNOTAVAIL`, `EADDRINUSE` on connect (no free ephemeral port toward the address) | `ephemeral_ports` |
//! | `ENOBUFS`, `ENOMEM`, `ErrorKind::OutOfMemory`, `getaddrinfo`'s `EAI_MEMORY` | `memory` |
//! | `getaddrinfo`'s `EAI_AGAIN` ("Temporary failure in name resolution") and `EAI_FAIL` ("Non-recoverable failure in name resolution"), a lookup that timed out | `dns_resolver` |
//!
//! Everything else is the provider's: connection refused or reset, unreachable hosts,
//! TLS failures, timeouts of the provider's own limits, and a host name that does not
//! exist (`EAI_NONAME`, `EAI_NODATA`: NXDOMAIN is the provider's or its configuration's
//! problem, and only that provider is affected). `EAI_AGAIN` is counted as the gateway's
//! own although a provider whose authoritative servers fail (SERVFAIL) also produces it:
//! the common cause is the resolver the gateway depends on (resolv.conf unreadable, the
//! VPC resolver throttling or unreachable), and blaming it on providers would open the
//! breaker of every provider at once. `getaddrinfo`'s `EAI_SYSTEM` arrives as the
//! underlying `errno` (a resolver out of descriptors is `file_descriptors`).
//!
//! Whether the next candidate is worth trying ([`LocalFailure::affects_every_call`]): not
//! when the process is out of descriptors or memory (every call fails the same way, at
//! once); yes for ephemeral ports (they are counted per destination address) and the
//! resolver (another provider's name may still resolve, from its cache).

use std::error::Error;
use std::fmt;
use std::io;

/// How deep [`LocalFailure::find`] follows an error's sources.
const MAX_SOURCE_DEPTH: usize = 16;

/// The prefix of every `getaddrinfo` failure std reports (other than `EAI_SYSTEM`).
const LOOKUP_FAILED: &str = "failed to lookup address information";

/// Which of the gateway's own resources failed a call. The label values of
/// `switchboard_local_errors_total{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LocalFailure {
    /// `EMFILE` / `ENFILE`: the process (or the system) is out of file descriptors.
    FileDescriptors,
    /// `EADDRNOTAVAIL` / `EADDRINUSE`: no local port left toward the address.
    EphemeralPorts,
    /// `ENOBUFS` / `ENOMEM`: no kernel buffers or memory for the socket.
    Memory,
    /// The DNS resolver the gateway uses could not answer (not: the name does not exist).
    DnsResolver,
}

impl LocalFailure {
    /// Every kind, for docs and tests.
    pub const ALL: [LocalFailure; 4] = [
        LocalFailure::FileDescriptors,
        LocalFailure::EphemeralPorts,
        LocalFailure::Memory,
        LocalFailure::DnsResolver,
    ];

    /// The metric label (a fixed vocabulary).
    pub fn kind(self) -> &'static str {
        match self {
            LocalFailure::FileDescriptors => "file_descriptors",
            LocalFailure::EphemeralPorts => "ephemeral_ports",
            LocalFailure::Memory => "memory",
            LocalFailure::DnsResolver => "dns_resolver",
        }
    }

    /// What happened, in the gateway's own words (for logs, usage rows and the client).
    pub fn describe(self) -> &'static str {
        match self {
            LocalFailure::FileDescriptors => "the gateway is out of file descriptors",
            LocalFailure::EphemeralPorts => "the gateway has no free local port for the call",
            LocalFailure::Memory => "the gateway is out of memory or socket buffers",
            LocalFailure::DnsResolver => "the gateway's DNS resolver is unavailable",
        }
    }

    /// Whether every other call would fail the same way right now (the process itself is
    /// out of the resource), so trying the next candidate is pointless.
    pub fn affects_every_call(self) -> bool {
        matches!(self, LocalFailure::FileDescriptors | LocalFailure::Memory)
    }

    /// The first local failure in `error`'s source chain, if any.
    pub fn find(error: &(dyn Error + 'static)) -> Option<LocalFailure> {
        let mut next = Some(error);
        for _ in 0..MAX_SOURCE_DEPTH {
            let current = next?;
            if let Some(io) = current.downcast_ref::<io::Error>()
                && let Some(found) = Self::of_io(io)
            {
                return Some(found);
            }
            next = current.source();
        }
        None
    }

    /// Classifies one `io::Error`, looking inside a custom one (whose `source()` skips the
    /// error it wraps).
    pub fn of_io(error: &io::Error) -> Option<LocalFailure> {
        if let Some(code) = error.raw_os_error() {
            return Self::of_errno(code);
        }
        match error.kind() {
            io::ErrorKind::OutOfMemory => return Some(LocalFailure::Memory),
            io::ErrorKind::AddrNotAvailable => return Some(LocalFailure::EphemeralPorts),
            _ => {}
        }
        if let Some(found) = Self::of_lookup_message(&error.to_string()) {
            return Some(found);
        }
        error.get_ref().and_then(|inner| {
            let inner: &(dyn Error + 'static) = inner;
            Self::find(inner)
        })
    }

    /// An OS error number.
    pub fn of_errno(code: i32) -> Option<LocalFailure> {
        match code {
            libc::EMFILE | libc::ENFILE => Some(LocalFailure::FileDescriptors),
            libc::EADDRNOTAVAIL | libc::EADDRINUSE => Some(LocalFailure::EphemeralPorts),
            libc::ENOBUFS | libc::ENOMEM => Some(LocalFailure::Memory),
            _ => None,
        }
    }

    /// std's text for a failed `getaddrinfo`: "failed to lookup address information:
    /// {gai_strerror}" (glibc and musl word these alike; Rust programs run in the C
    /// locale, so the text is English).
    fn of_lookup_message(message: &str) -> Option<LocalFailure> {
        let detail = message.strip_prefix(LOOKUP_FAILED)?;
        if detail.contains("Temporary failure in name resolution")
            || detail.contains("Non-recoverable failure in name resolution")
        {
            Some(LocalFailure::DnsResolver)
        } else if detail.contains("Memory allocation failure") || detail.contains("Out of memory") {
            Some(LocalFailure::Memory)
        } else {
            None
        }
    }
}

impl fmt::Display for LocalFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// Real reqwest errors around an OS error, for tests.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod testing {
    /// A connector that fails every connection with `errno`, as the operating system
    /// would (hyper-util's connector returns the `io::Error` of `socket()` / `connect()`),
    /// so that reqwest builds its real error around it.
    #[derive(Clone)]
    pub(crate) struct FailingConnector<S> {
        errno: i32,
        _inner: S,
    }

    impl<S, R> tower::Service<R> for FailingConnector<S>
    where
        S: tower::Service<R, Error = Box<dyn std::error::Error + Send + Sync>>,
    {
        type Response = S::Response;
        type Error = Box<dyn std::error::Error + Send + Sync>;
        type Future = std::future::Ready<Result<S::Response, Self::Error>>;

        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Self::Error>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: R) -> Self::Future {
            std::future::ready(Err(Box::new(std::io::Error::from_raw_os_error(self.errno))))
        }
    }

    /// A client whose every connection fails with `errno`.
    pub(crate) fn client_failing_with(errno: i32) -> reqwest::Client {
        reqwest::Client::builder()
            .connector_layer(tower::layer::layer_fn(move |inner| FailingConnector {
                errno,
                _inner: inner,
            }))
            .build()
            .unwrap()
    }

    /// The reqwest error of one call through a connector that fails with `errno`.
    pub(crate) async fn reqwest_error_with_errno(errno: i32) -> reqwest::Error {
        client_failing_with(errno)
            .get("http://127.0.0.1:9/v1/models")
            .send()
            .await
            .unwrap_err()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// hyper-util's `ConnectError`: a message and the `io::Error` as its source.
    #[derive(Debug)]
    struct Connect {
        message: &'static str,
        cause: io::Error,
    }

    impl fmt::Display for Connect {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.message)
        }
    }

    impl Error for Connect {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.cause)
        }
    }

    /// An outer error (reqwest's, hyper's) whose source is `inner`.
    #[derive(Debug)]
    struct Wrapped(Box<dyn Error + Send + Sync>);

    impl fmt::Display for Wrapped {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("client error (Connect)")
        }
    }

    impl Error for Wrapped {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&*self.0)
        }
    }

    fn chain(message: &'static str, cause: io::Error) -> Wrapped {
        Wrapped(Box::new(Connect { message, cause }))
    }

    #[test]
    fn os_errors_of_the_gateway_are_local() {
        let cases = [
            (libc::EMFILE, LocalFailure::FileDescriptors),
            (libc::ENFILE, LocalFailure::FileDescriptors),
            (libc::EADDRNOTAVAIL, LocalFailure::EphemeralPorts),
            (libc::EADDRINUSE, LocalFailure::EphemeralPorts),
            (libc::ENOBUFS, LocalFailure::Memory),
            (libc::ENOMEM, LocalFailure::Memory),
        ];
        for (code, expected) in cases {
            let error = chain("tcp open error", io::Error::from_raw_os_error(code));
            assert_eq!(LocalFailure::find(&error), Some(expected), "errno {code}");
        }
        // Too many open files, as std words it.
        let emfile = io::Error::from_raw_os_error(libc::EMFILE);
        assert!(
            emfile.to_string().contains("Too many open files"),
            "{emfile}"
        );
    }

    #[test]
    fn os_errors_of_the_provider_are_not() {
        for code in [
            libc::ECONNREFUSED,
            libc::ECONNRESET,
            libc::EHOSTUNREACH,
            libc::ENETUNREACH,
            libc::ETIMEDOUT,
            libc::EPIPE,
        ] {
            let error = chain("tcp connect error", io::Error::from_raw_os_error(code));
            assert_eq!(LocalFailure::find(&error), None, "errno {code}");
        }
        assert_eq!(
            LocalFailure::find(&io::Error::from(io::ErrorKind::ConnectionRefused)),
            None
        );
    }

    #[test]
    fn a_real_refused_connection_is_the_providers() {
        // A port nobody listens on: connect() fails with ECONNREFUSED from the kernel.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        let error = std::net::TcpStream::connect(address).unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::ECONNREFUSED));
        assert_eq!(LocalFailure::find(&chain("tcp connect error", error)), None);
    }

    #[test]
    fn a_custom_io_error_is_looked_inside() {
        // io::Error::new(kind, inner): its source() skips `inner`, get_ref() does not.
        let inner = io::Error::from_raw_os_error(libc::EMFILE);
        let outer = io::Error::other(inner);
        assert_eq!(
            LocalFailure::find(&chain("tcp open error", outer)),
            Some(LocalFailure::FileDescriptors)
        );
        assert_eq!(
            LocalFailure::of_io(&io::Error::from(io::ErrorKind::OutOfMemory)),
            Some(LocalFailure::Memory)
        );
    }

    #[test]
    fn resolver_failures_are_local_but_a_missing_name_is_not() {
        // std's words for getaddrinfo errors (`EAI_SYSTEM` comes as the errno instead);
        // std's kind is the unstable `Uncategorized`, so `Other` stands in for it.
        let lookup = |detail: &str| {
            io::Error::other(format!("failed to lookup address information: {detail}"))
        };
        for (detail, expected) in [
            (
                "Temporary failure in name resolution",
                Some(LocalFailure::DnsResolver),
            ),
            (
                "Non-recoverable failure in name resolution",
                Some(LocalFailure::DnsResolver),
            ),
            ("Memory allocation failure", Some(LocalFailure::Memory)),
            ("Name or service not known", None),
            ("No address associated with hostname", None),
            ("Name does not resolve", None),
        ] {
            let error = chain("dns error", lookup(detail));
            assert_eq!(LocalFailure::find(&error), expected, "{detail}");
        }
        // A resolver that could not open its socket: EAI_SYSTEM, so the errno.
        let error = chain("dns error", io::Error::from_raw_os_error(libc::EMFILE));
        assert_eq!(
            LocalFailure::find(&error),
            Some(LocalFailure::FileDescriptors)
        );
        // The message must be std's lookup failure, not any text that mentions it.
        assert_eq!(
            LocalFailure::find(&io::Error::other(
                "upstream said: Temporary failure in name resolution"
            )),
            None
        );
    }

    #[test]
    fn kinds_are_a_fixed_vocabulary_and_only_process_wide_ones_stop_a_request() {
        let kinds: Vec<&str> = LocalFailure::ALL.iter().map(|f| f.kind()).collect();
        assert_eq!(
            kinds,
            [
                "file_descriptors",
                "ephemeral_ports",
                "memory",
                "dns_resolver"
            ]
        );
        assert!(LocalFailure::FileDescriptors.affects_every_call());
        assert!(LocalFailure::Memory.affects_every_call());
        assert!(!LocalFailure::EphemeralPorts.affects_every_call());
        assert!(!LocalFailure::DnsResolver.affects_every_call());
        assert!(
            LocalFailure::FileDescriptors
                .to_string()
                .contains("out of file descriptors")
        );
    }
}
