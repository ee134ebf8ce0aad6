//! TIS over SPI (TCG PC Client Platform TPM Profile §6.4): the register file of a discrete
//! TPM on a microcontroller's SPI bus.
//!
//! Each register access is one chip-select-framed transfer: a 4-byte header (bit 7 of the
//! first byte = read, bits 5..0 = length − 1, then the 24-bit address 0xD4_0000 + register),
//! then up to 64 data bytes. The TPM may not be ready when the header ends: it then answers
//! the last header byte with bit 0 clear and the host clocks single bytes, chip select held,
//! until one comes back with bit 0 set (the *wait state* protocol); only then do the data
//! bytes flow.
//!
//! That decision is taken in the middle of the transfer, so it cannot be written as one
//! `embedded_hal::spi::SpiDevice::transaction`, whose operations are fixed before chip
//! select is asserted. This driver therefore owns the bus ([`SpiBus`]) and the chip-select
//! line ([`OutputPin`]) of the TPM, which is how a TPM is wired in practice (a dedicated
//! bus or a dedicated chip select).

use embedded_hal::digital::OutputPin;
use embedded_hal::spi::SpiBus;

use super::tis::TisRegisters;
use super::transport::TransportError;

/// Largest data phase of one TIS-over-SPI transfer.
pub const MAX_TRANSFER: usize = 64;
/// Single-byte wait-state polls before the transfer is abandoned. A TPM inserts a few; a
/// TPM that holds the bus for longer is not answering.
pub const MAX_WAIT_STATES: u32 = 10_000;

const READ: u8 = 0x80;
/// Locality 0's register space in the SPI address map.
const BASE: u32 = 0x00D4_0000;

/// A TPM's TIS register file on SPI.
pub struct TisSpi<B: SpiBus<u8>, CS: OutputPin> {
    bus: B,
    cs: CS,
    /// Wait states seen so far (for tests and diagnostics).
    pub wait_states: u32,
}

impl<B: SpiBus<u8>, CS: OutputPin> TisSpi<B, CS> {
    pub fn new(bus: B, mut cs: CS) -> Self {
        // Deasserted until the first transfer; a failure here shows up on that transfer.
        let _ = cs.set_high();
        TisSpi {
            bus,
            cs,
            wait_states: 0,
        }
    }

    pub fn into_parts(self) -> (B, CS) {
        (self.bus, self.cs)
    }

    /// One chip-select-framed transfer: header, wait states, data.
    fn transfer(&mut self, read: bool, reg: u16, data: Data<'_>) -> Result<(), TransportError> {
        let len = data.len();
        if len == 0 || len > MAX_TRANSFER {
            return Err(TransportError::Malformed);
        }
        self.cs.set_low().map_err(|_| TransportError::Io)?;
        let result = self.framed(read, reg, data);
        let flushed = self.bus.flush().map_err(|_| TransportError::Io);
        let released = self.cs.set_high().map_err(|_| TransportError::Io);
        result.and(flushed).and(released)
    }

    fn framed(&mut self, read: bool, reg: u16, data: Data<'_>) -> Result<(), TransportError> {
        let addr = BASE | u32::from(reg);
        let mut header = [
            (if read { READ } else { 0 }) | (data.len() - 1) as u8,
            (addr >> 16) as u8,
            (addr >> 8) as u8,
            addr as u8,
        ];
        let io = |_| TransportError::Io;
        self.bus.transfer_in_place(&mut header).map_err(io)?;
        if header[3] & 1 == 0 {
            let mut polls = 0;
            loop {
                let mut b = [0u8];
                self.bus.transfer_in_place(&mut b).map_err(io)?;
                self.wait_states = self.wait_states.saturating_add(1);
                if b[0] & 1 == 1 {
                    break;
                }
                polls += 1;
                if polls >= MAX_WAIT_STATES {
                    return Err(TransportError::Timeout);
                }
            }
        }
        match data {
            Data::In(buf) => self.bus.read(buf).map_err(io),
            Data::Out(bytes) => self.bus.write(bytes).map_err(io),
        }
    }
}

enum Data<'a> {
    In(&'a mut [u8]),
    Out(&'a [u8]),
}

impl Data<'_> {
    fn len(&self) -> usize {
        match self {
            Data::In(b) => b.len(),
            Data::Out(b) => b.len(),
        }
    }
}

impl<B: SpiBus<u8>, CS: OutputPin> TisRegisters for TisSpi<B, CS> {
    fn read(&mut self, reg: u16, buf: &mut [u8]) -> Result<(), TransportError> {
        // Ordinary registers are read in one transfer; the FIFO callers already respect
        // max_transfer().
        for (i, chunk) in buf.chunks_mut(MAX_TRANSFER).enumerate() {
            let at = if reg == super::tis::reg::DATA_FIFO {
                reg
            } else {
                reg + (i * MAX_TRANSFER) as u16
            };
            self.transfer(true, at, Data::In(chunk))?;
        }
        Ok(())
    }

    fn write(&mut self, reg: u16, data: &[u8]) -> Result<(), TransportError> {
        for (i, chunk) in data.chunks(MAX_TRANSFER).enumerate() {
            let at = if reg == super::tis::reg::DATA_FIFO {
                reg
            } else {
                reg + (i * MAX_TRANSFER) as u16
            };
            self.transfer(false, at, Data::Out(chunk))?;
        }
        Ok(())
    }

    fn max_transfer(&self) -> usize {
        MAX_TRANSFER
    }
}
