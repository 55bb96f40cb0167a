//! https: the load's connections over TLS (rustls), driven by the same
//! non-blocking event loop as plain ones. A `Transport` reads and writes
//! plaintext; under it, rustls turns that into records on the socket,
//! and the handshake happens as the first request is sent and its answer
//! read, as it does in curl, oha and wrk.
//!
//! Certificates are checked against the system's trust store, or only
//! against `--cacert FILE` when given (curl's meaning); `--insecure`
//! checks nothing but the handshake's signatures.

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use crate::LoadError;

/// What every TLS connection of a run shares: the configuration (its
/// session cache too) and the name the certificate must carry.
#[derive(Clone)]
pub struct TlsClient {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("name", &self.name)
            .finish()
    }
}

impl TlsClient {
    /// A client for `host`, trusting the system's certificates, those of
    /// `ca_file` instead, or (`insecure`) any.
    pub fn new(host: &str, ca_file: Option<&Path>, insecure: bool) -> Result<TlsClient, LoadError> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(bare.to_owned())
            .map_err(|_| LoadError::BadUrl(format!("{host}: not a name TLS can check")))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| LoadError::Tls(format!("TLS versions: {e}")))?;
        let mut config = if insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth()
        } else {
            builder
                .with_root_certificates(trusted(ca_file)?)
                .with_no_client_auth()
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsClient {
            config: Arc::new(config),
            name,
        })
    }

    /// A new connection's TLS side, over `tcp`.
    pub(crate) fn connect(&self, tcp: TcpStream) -> io::Result<Transport> {
        let tls = ClientConnection::new(Arc::clone(&self.config), self.name.clone())
            .map_err(tls_error)?;
        Ok(Transport::Tls(Box::new(TlsStream { tcp, tls })))
    }
}

/// The certificates a run trusts: those of `ca_file`, or the system's.
fn trusted(ca_file: Option<&Path>) -> Result<RootCertStore, LoadError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| LoadError::Tls(format!("--cacert {}: {e}", path.display())))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(LoadError::Tls(format!(
                    "--cacert {}: no certificate in it",
                    path.display()
                )));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(LoadError::Tls(
                    "no trusted certificates on this system (install ca-certificates), \
                     or give --cacert FILE, or --insecure"
                        .into(),
                ));
            }
        }
    }
    Ok(roots)
}

/// `--insecure`: any certificate is taken, but the handshake's signatures
/// are still checked (what curl -k does).
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS failure as an I/O error the engine classifies as
/// [`crate::stats::ErrorKind::Tls`].
fn tls_error(error: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

/// Whether an I/O error is a TLS failure (a certificate refused, a bad
/// record), and what it said.
pub(crate) fn tls_failure(error: &io::Error) -> Option<String> {
    error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .map(ToString::to_string)
}

/// One connection of the load: TCP, or TLS over TCP.
pub(crate) enum Transport {
    /// http://
    Plain(TcpStream),
    /// https://
    Tls(Box<TlsStream>),
}

/// A TLS connection and its socket.
pub(crate) struct TlsStream {
    tcp: TcpStream,
    tls: ClientConnection,
}

impl TlsStream {
    /// Sends what TLS has queued, as far as the socket takes it.
    fn send_queued(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.tcp) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Takes what TLS will queue of `buf` (64 KiB at most until the
    /// handshake is done and while records wait for the socket), then
    /// sends; WouldBlock when it took nothing: the handshake must move on
    /// ([`Transport::advance_handshake`]) or the socket drain first.
    fn write_plain(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut taken = self.tls.writer().write(buf)?;
        if taken == 0 && !buf.is_empty() {
            self.send_queued()?;
            taken = self.tls.writer().write(buf)?;
        }
        self.send_queued()?;
        if taken == 0 && !buf.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(taken)
    }

    /// Plaintext of the answer: records are read from the socket until
    /// some is there, the socket would block, or the stream ends.
    fn read_plain(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut ended = false;
        loop {
            match self.tls.reader().read(buf) {
                Ok(n) => return Ok(n),
                // The server closed without close_notify, as many do after
                // `Connection: close`: an end of stream. Whether the answer
                // was whole is for HTTP to say.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && ended => return Ok(0),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            // Records from the socket (WouldBlock ends the read), then
            // what they make TLS answer: the handshake's next messages.
            ended = self.tls.read_tls(&mut self.tcp)? == 0;
            self.tls.process_new_packets().map_err(tls_error)?;
            self.send_queued()?;
        }
    }
}

impl Transport {
    /// The socket under it.
    pub(crate) fn tcp(&self) -> &TcpStream {
        match self {
            Transport::Plain(tcp) => tcp,
            Transport::Tls(stream) => &stream.tcp,
        }
    }

    /// While a request is still being written: reads what the server sent
    /// of the handshake and answers it, so that TLS takes the rest of the
    /// request. Nothing to do for a plain connection.
    pub(crate) fn advance_handshake(&mut self) -> io::Result<()> {
        let Transport::Tls(stream) = self else {
            return Ok(());
        };
        while stream.tls.is_handshaking() {
            match stream.tls.read_tls(&mut stream.tcp) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(_) => {
                    stream.tls.process_new_packets().map_err(tls_error)?;
                    stream.send_queued()?;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Sends what TLS has queued (a handshake message, records of the
    /// request), as far as the socket takes it; the rest goes when it is
    /// writable again. Nothing to do for a plain connection.
    pub(crate) fn send_queued(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(_) => Ok(()),
            Transport::Tls(stream) => stream.send_queued(),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(tcp) => tcp.write(buf),
            Transport::Tls(stream) => stream.write_plain(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_queued()
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(tcp) => tcp.read(buf),
            Transport::Tls(stream) => stream.read_plain(buf),
        }
    }
}
