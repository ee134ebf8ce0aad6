//! swtpm's raw TCP command port (`swtpm socket --server type=tcp`), for host tests only:
//! the same client code that runs over TIS in the image runs here against a real TPM
//! emulator.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use attest_firmware::tpm::transport::{TpmTransport, TransportError, response_size};

pub struct SwtpmTcp {
    stream: TcpStream,
}

impl SwtpmTcp {
    /// Connects to swtpm's command port (not its control port).
    pub fn connect(host: &str, port: u16) -> std::io::Result<SwtpmTcp> {
        let stream = TcpStream::connect((host, port))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        stream.set_nodelay(true)?;
        Ok(SwtpmTcp { stream })
    }

    /// From a tpm2-tss TCTI string `swtpm:host=H,port=P`.
    pub fn from_tcti(tcti: &str) -> std::io::Result<SwtpmTcp> {
        let conf = tcti.strip_prefix("swtpm:").unwrap_or(tcti);
        let (mut host, mut port) = ("127.0.0.1", 2321u16);
        for kv in conf.split(',') {
            match kv.split_once('=') {
                Some(("host", h)) => host = h,
                Some(("port", p)) => port = p.parse().map_err(std::io::Error::other)?,
                _ => {}
            }
        }
        SwtpmTcp::connect(host, port)
    }
}

impl TpmTransport for SwtpmTcp {
    fn transmit(&mut self, command: &[u8], response: &mut [u8]) -> Result<usize, TransportError> {
        let io = |e: std::io::Error| match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                TransportError::Timeout
            }
            _ => TransportError::Io,
        };
        self.stream.write_all(command).map_err(io)?;
        if response.len() < 10 {
            return Err(TransportError::ResponseTooLarge { needed: 10 });
        }
        self.stream.read_exact(&mut response[..10]).map_err(io)?;
        let size = response_size(&response[..10])?;
        if size > response.len() {
            return Err(TransportError::ResponseTooLarge { needed: size });
        }
        self.stream
            .read_exact(&mut response[10..size])
            .map_err(io)?;
        Ok(size)
    }
}
