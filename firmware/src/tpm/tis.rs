//! The TPM Interface Specification (TIS, TCG PC Client Platform TPM Profile §6) FIFO
//! protocol, over any way of reaching the register file.
//!
//! A PC's TPM sits at 0xFED40000 as memory-mapped registers; a microcontroller's TPM sits
//! behind SPI, where every register access is a small SPI transaction. The protocol on top
//! (claim locality 0, commandReady, burstCount-sized writes checked with stsValid/Expect,
//! tpmGo, dataAvail, burstCount-sized reads) is the same, so it lives here once, over
//! [`TisRegisters`]; `spi.rs` and the bare-metal image's MMIO provide the registers.
//!
//! Every wait is bounded: a TPM that stops answering makes the command fail with
//! [`TransportError::Timeout`] rather than hang the boot. Time comes from a
//! [`DelayNs`] between polls, so the budget is a lower bound on the real time waited.

use embedded_hal::delay::DelayNs;

use super::transport::{TpmTransport, TransportError, response_size};

/// Register offsets within a locality's 4 KiB page (PTP Table 19).
pub mod reg {
    pub const ACCESS: u16 = 0x00;
    pub const STS: u16 = 0x18;
    pub const BURST_COUNT: u16 = 0x19;
    pub const DATA_FIFO: u16 = 0x24;
    pub const DID_VID: u16 = 0xF00;
}

/// TPM_ACCESS bits.
pub mod access {
    pub const REQUEST_USE: u8 = 0x02;
    pub const ACTIVE_LOCALITY: u8 = 0x20;
    pub const REG_VALID: u8 = 0x80;
}

/// TPM_STS bits (low byte).
pub mod sts {
    pub const EXPECT: u8 = 0x08;
    pub const DATA_AVAIL: u8 = 0x10;
    pub const GO: u8 = 0x20;
    pub const COMMAND_READY: u8 = 0x40;
    pub const VALID: u8 = 0x80;
}

/// The register file of locality 0, however it is reached.
///
/// `read` and `write` move `buf.len()` bytes at `reg` the way the bus does: consecutive
/// registers for ordinary addresses, the FIFO repeatedly for [`reg::DATA_FIFO`].
pub trait TisRegisters {
    fn read(&mut self, reg: u16, buf: &mut [u8]) -> Result<(), TransportError>;
    fn write(&mut self, reg: u16, data: &[u8]) -> Result<(), TransportError>;
    /// Largest single transfer the bus allows (SPI: 64 bytes; MMIO: unbounded).
    fn max_transfer(&self) -> usize {
        usize::MAX
    }
}

impl<R: TisRegisters + ?Sized> TisRegisters for &mut R {
    fn read(&mut self, reg: u16, buf: &mut [u8]) -> Result<(), TransportError> {
        (**self).read(reg, buf)
    }
    fn write(&mut self, reg: u16, data: &[u8]) -> Result<(), TransportError> {
        (**self).write(reg, data)
    }
    fn max_transfer(&self) -> usize {
        (**self).max_transfer()
    }
}

/// Time budgets, in microseconds (PTP Table 17's TIMEOUT_A/B/C, and a command budget long
/// enough for RSA-2048 key generation on a slow TPM).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub locality_us: u32,
    pub ready_us: u32,
    pub status_us: u32,
    pub command_us: u32,
    /// Pause between polls.
    pub poll_us: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            locality_us: 750_000,
            ready_us: 2_000_000,
            status_us: 750_000,
            command_us: 90_000_000,
            poll_us: 20,
        }
    }
}

/// A [`TpmTransport`] over the TIS FIFO protocol.
pub struct Tis<R: TisRegisters, D: DelayNs> {
    regs: R,
    delay: D,
    timeouts: Timeouts,
    claimed: bool,
}

impl<R: TisRegisters, D: DelayNs> Tis<R, D> {
    pub fn new(regs: R, delay: D) -> Self {
        Tis {
            regs,
            delay,
            timeouts: Timeouts::default(),
            claimed: false,
        }
    }

    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    pub fn into_parts(self) -> (R, D) {
        (self.regs, self.delay)
    }

    /// TPM_DID_VID: vendor in the low 16 bits. All ones means nothing answers there.
    pub fn did_vid(&mut self) -> Result<u32, TransportError> {
        let mut b = [0u8; 4];
        self.regs.read(reg::DID_VID, &mut b)?;
        let v = u32::from_le_bytes(b);
        if v == u32::MAX || v == 0 {
            return Err(TransportError::NotPresent);
        }
        Ok(v)
    }

    fn read8(&mut self, reg: u16) -> Result<u8, TransportError> {
        let mut b = [0u8];
        self.regs.read(reg, &mut b)?;
        Ok(b[0])
    }

    /// Polls `reg` until `done(value)`, for at most `budget_us`.
    fn wait(
        &mut self,
        reg: u16,
        budget_us: u32,
        done: impl Fn(u8) -> bool,
    ) -> Result<u8, TransportError> {
        let mut waited: u32 = 0;
        loop {
            let v = self.read8(reg)?;
            if v == 0xff && reg == reg::STS {
                // A floating bus reads all ones; no real STS has every bit set.
                return Err(TransportError::NotPresent);
            }
            if done(v) {
                return Ok(v);
            }
            if waited >= budget_us {
                return Err(TransportError::Timeout);
            }
            self.delay.delay_us(self.timeouts.poll_us);
            waited = waited.saturating_add(self.timeouts.poll_us.max(1));
        }
    }

    /// Claims locality 0 (once; it stays ours until we give it up).
    fn claim(&mut self) -> Result<(), TransportError> {
        if self.claimed {
            return Ok(());
        }
        self.did_vid()?;
        let a = self.read8(reg::ACCESS)?;
        if a & (access::REG_VALID | access::ACTIVE_LOCALITY)
            != (access::REG_VALID | access::ACTIVE_LOCALITY)
        {
            self.regs.write(reg::ACCESS, &[access::REQUEST_USE])?;
            self.wait(reg::ACCESS, self.timeouts.locality_us, |a| {
                a & (access::REG_VALID | access::ACTIVE_LOCALITY)
                    == (access::REG_VALID | access::ACTIVE_LOCALITY)
            })?;
        }
        self.claimed = true;
        Ok(())
    }

    /// burstCount: how many FIFO bytes the TPM takes or gives without further checks.
    fn burst(&mut self) -> Result<usize, TransportError> {
        let mut waited: u32 = 0;
        loop {
            let mut b = [0u8; 2];
            self.regs.read(reg::BURST_COUNT, &mut b)?;
            let n = u16::from_le_bytes(b) as usize;
            if n > 0 {
                return Ok(n.min(self.regs.max_transfer()));
            }
            if waited >= self.timeouts.status_us {
                return Err(TransportError::Timeout);
            }
            self.delay.delay_us(self.timeouts.poll_us);
            waited = waited.saturating_add(self.timeouts.poll_us.max(1));
        }
    }

    fn valid_status(&mut self) -> Result<u8, TransportError> {
        self.wait(reg::STS, self.timeouts.status_us, |s| s & sts::VALID != 0)
    }

    fn ready(&mut self) -> Result<(), TransportError> {
        self.regs.write(reg::STS, &[sts::COMMAND_READY])?;
        self.wait(reg::STS, self.timeouts.ready_us, |s| {
            s & sts::COMMAND_READY != 0
        })?;
        Ok(())
    }

    fn send(&mut self, command: &[u8]) -> Result<(), TransportError> {
        let Some((&last, body)) = command.split_last() else {
            return Err(TransportError::Malformed);
        };
        self.ready()?;
        let mut sent = 0;
        while sent < body.len() {
            let n = self.burst()?.min(body.len() - sent);
            self.regs.write(reg::DATA_FIFO, &body[sent..sent + n])?;
            sent += n;
            // The TPM must still expect bytes; if it does not, it parsed a shorter command.
            if self.valid_status()? & sts::EXPECT == 0 {
                return Err(TransportError::Malformed);
            }
        }
        self.burst()?;
        self.regs.write(reg::DATA_FIFO, &[last])?;
        if self.valid_status()? & sts::EXPECT != 0 {
            return Err(TransportError::Malformed);
        }
        self.regs.write(reg::STS, &[sts::GO])
    }

    fn fifo_read(&mut self, out: &mut [u8]) -> Result<(), TransportError> {
        let mut got = 0;
        while got < out.len() {
            let n = self.burst()?.min(out.len() - got);
            self.regs.read(reg::DATA_FIFO, &mut out[got..got + n])?;
            got += n;
        }
        Ok(())
    }

    fn receive(&mut self, response: &mut [u8]) -> Result<usize, TransportError> {
        let want = sts::VALID | sts::DATA_AVAIL;
        self.wait(reg::STS, self.timeouts.command_us, |s| s & want == want)?;
        if response.len() < 10 {
            return Err(TransportError::ResponseTooLarge { needed: 10 });
        }
        self.fifo_read(&mut response[..10])?;
        let size = response_size(&response[..10])?;
        if size > response.len() {
            return Err(TransportError::ResponseTooLarge { needed: size });
        }
        self.fifo_read(&mut response[10..size])?;
        // Everything read: the TPM must have no more data for us.
        if self.valid_status()? & sts::DATA_AVAIL != 0 {
            return Err(TransportError::Malformed);
        }
        Ok(size)
    }
}

impl<R: TisRegisters, D: DelayNs> TpmTransport for Tis<R, D> {
    fn transmit(&mut self, command: &[u8], response: &mut [u8]) -> Result<usize, TransportError> {
        self.claim()?;
        let result = self.send(command).and_then(|()| self.receive(response));
        // Back to idle whatever happened, so the next command starts clean (this also
        // aborts a half-sent command or discards an unread response).
        let idle = self.regs.write(reg::STS, &[sts::COMMAND_READY]);
        let n = result?;
        idle?;
        Ok(n)
    }
}
