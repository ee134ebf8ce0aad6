//! How command bytes reach a TPM. The client above knows nothing of MMIO, SPI or sockets;
//! each transport moves one command frame in and one response frame out, within a time
//! budget it enforces itself (a TPM that stops answering must not hang the boot).

/// Why a command did not produce a response frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum TransportError {
    /// The TPM did not become ready, accept the command or produce a response in time.
    Timeout,
    /// The response does not fit the caller's buffer (its header says `needed` bytes).
    ResponseTooLarge { needed: usize },
    /// The response frame is shorter than its header, or its size field is impossible.
    Malformed,
    /// No TPM there (all-ones registers, wrong vendor), or the link to it failed.
    NotPresent,
    /// Reading from or writing to the medium failed.
    Io,
}

impl core::fmt::Display for TransportError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            TransportError::Timeout => f.write_str("the TPM did not answer in time"),
            TransportError::ResponseTooLarge { needed } => {
                write!(
                    f,
                    "the TPM's response ({needed} bytes) does not fit the buffer"
                )
            }
            TransportError::Malformed => f.write_str("the TPM's response frame is malformed"),
            TransportError::NotPresent => f.write_str("no TPM answers on this interface"),
            TransportError::Io => f.write_str("I/O error talking to the TPM"),
        }
    }
}

/// One TPM interface: sends `command`, writes the whole response frame into `response`
/// and returns its length.
pub trait TpmTransport {
    fn transmit(&mut self, command: &[u8], response: &mut [u8]) -> Result<usize, TransportError>;
}

impl<T: TpmTransport + ?Sized> TpmTransport for &mut T {
    fn transmit(&mut self, command: &[u8], response: &mut [u8]) -> Result<usize, TransportError> {
        (**self).transmit(command, response)
    }
}

/// The size field of a TPM response header (bytes 2..6), checked against what was read.
pub fn response_size(header: &[u8]) -> Result<usize, TransportError> {
    match header {
        [_, _, a, b, c, d, ..] => {
            let size = u32::from_be_bytes([*a, *b, *c, *d]) as usize;
            if size < 10 {
                Err(TransportError::Malformed)
            } else {
                Ok(size)
            }
        }
        _ => Err(TransportError::Malformed),
    }
}
