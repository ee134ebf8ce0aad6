//! A TPM's TIS front end (PTP §5.6.12 FIFO state machine: idle, ready, reception,
//! execution, completion) in front of a real TPM reached through any transport (swtpm
//! here), and an SPI slave that exposes it with the TCG wait-state protocol.
//!
//! This is the one test double in the firmware tests, standing in for the silicon between
//! the bus and the TPM: commands still execute in swtpm. It records every protocol
//! violation it sees so the tests can assert the driver made none.

use std::cell::RefCell;
use std::convert::Infallible;
use std::rc::Rc;

use attest_firmware::tpm::tis::{TisRegisters, access, reg, sts};
use attest_firmware::tpm::transport::{TpmTransport, TransportError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fifo {
    Idle,
    Ready,
    Reception,
    Completion,
}

pub struct TisModel<T: TpmTransport> {
    tpm: T,
    state: Fifo,
    active: bool,
    burst: usize,
    command: Vec<u8>,
    response: Vec<u8>,
    read_at: usize,
    /// Commands executed.
    pub commands: usize,
    /// Protocol violations seen, in words.
    pub violations: Vec<String>,
    /// When set, STS never reports commandReady (a TPM that hangs).
    pub stuck: bool,
}

impl<T: TpmTransport> TisModel<T> {
    pub fn new(tpm: T, burst: usize) -> Self {
        TisModel {
            tpm,
            state: Fifo::Idle,
            active: false,
            burst,
            command: Vec::new(),
            response: Vec::new(),
            read_at: 0,
            commands: 0,
            violations: Vec::new(),
            stuck: false,
        }
    }

    fn expected_len(&self) -> Option<usize> {
        (self.command.len() >= 6)
            .then(|| u32::from_be_bytes(self.command[2..6].try_into().unwrap()) as usize)
    }

    fn expect(&self) -> bool {
        match self.state {
            Fifo::Ready => true,
            Fifo::Reception => self.expected_len().is_none_or(|n| self.command.len() < n),
            _ => false,
        }
    }

    fn sts(&self) -> [u8; 4] {
        let mut b = sts::VALID;
        if self.state == Fifo::Ready && !self.stuck {
            b |= sts::COMMAND_READY;
        }
        if self.expect() {
            b |= sts::EXPECT;
        }
        let left = self.response.len() - self.read_at;
        if self.state == Fifo::Completion && left > 0 {
            b |= sts::DATA_AVAIL;
        }
        let burst = match self.state {
            Fifo::Ready | Fifo::Reception => self.burst,
            Fifo::Completion => self.burst.min(left),
            Fifo::Idle => 0,
        } as u16;
        let [lo, hi] = burst.to_le_bytes();
        [b, lo, hi, 0]
    }

    pub fn read_byte(&mut self, addr: u16) -> u8 {
        if !self.active && addr != reg::ACCESS && addr < reg::DID_VID {
            self.violations
                .push(format!("read {addr:#x} without the locality"));
        }
        match addr {
            reg::ACCESS => {
                access::REG_VALID
                    | if self.active {
                        access::ACTIVE_LOCALITY
                    } else {
                        0
                    }
            }
            0x18..=0x1b => self.sts()[(addr - 0x18) as usize],
            reg::DATA_FIFO => {
                if self.state != Fifo::Completion || self.read_at >= self.response.len() {
                    self.violations
                        .push("FIFO read with no data available".into());
                    return 0xff;
                }
                self.read_at += 1;
                self.response[self.read_at - 1]
            }
            0xf00..=0xf03 => 0x1014_0001u32.to_le_bytes()[(addr - 0xf00) as usize],
            _ => 0xff,
        }
    }

    pub fn write_byte(&mut self, addr: u16, v: u8) {
        match addr {
            reg::ACCESS => {
                if v & access::REQUEST_USE != 0 {
                    self.active = true;
                }
            }
            reg::STS => {
                if v & sts::COMMAND_READY != 0 {
                    self.state = Fifo::Ready;
                    self.command.clear();
                    self.response.clear();
                    self.read_at = 0;
                } else if v & sts::GO != 0 {
                    if self.state != Fifo::Reception || self.expect() {
                        self.violations
                            .push("tpmGo before the whole command".into());
                        return;
                    }
                    let mut resp = vec![0u8; 4096];
                    match self.tpm.transmit(&self.command, &mut resp) {
                        Ok(n) => resp.truncate(n),
                        Err(e) => panic!("the TPM behind the model failed: {e}"),
                    }
                    self.commands += 1;
                    self.response = resp;
                    self.read_at = 0;
                    self.state = Fifo::Completion;
                }
            }
            reg::DATA_FIFO => match self.state {
                Fifo::Ready | Fifo::Reception if self.expect() => {
                    self.state = Fifo::Reception;
                    self.command.push(v);
                }
                _ => self
                    .violations
                    .push(format!("FIFO write in {:?} (overflow)", self.state)),
            },
            _ => self.violations.push(format!("write to {addr:#x}")),
        }
    }

    fn is_fifo(addr: u16) -> bool {
        addr == reg::DATA_FIFO
    }

    fn check_burst(&mut self, what: &str, n: usize) {
        if n > self.burst {
            self.violations.push(format!(
                "{what} of {n} bytes exceeds burstCount {}",
                self.burst
            ));
        }
    }
}

/// Memory-mapped access to the model (what the image does at 0xFED40000).
impl<T: TpmTransport> TisRegisters for TisModel<T> {
    fn read(&mut self, r: u16, buf: &mut [u8]) -> Result<(), TransportError> {
        if Self::is_fifo(r) {
            self.check_burst("FIFO read", buf.len());
        }
        for (i, b) in buf.iter_mut().enumerate() {
            *b = self.read_byte(if Self::is_fifo(r) { r } else { r + i as u16 });
        }
        Ok(())
    }

    fn write(&mut self, r: u16, data: &[u8]) -> Result<(), TransportError> {
        if Self::is_fifo(r) {
            self.check_burst("FIFO write", data.len());
        }
        for (i, &b) in data.iter().enumerate() {
            self.write_byte(if Self::is_fifo(r) { r } else { r + i as u16 }, b);
        }
        Ok(())
    }
}

#[derive(Debug)]
enum Phase {
    Header(Vec<u8>),
    Wait {
        left: u32,
    },
    Data {
        read: bool,
        addr: u16,
        len: usize,
        pos: usize,
    },
}

/// The SPI slave: a TIS-over-SPI TPM as the bus sees it, byte by byte.
pub struct SpiTpm<T: TpmTransport> {
    pub model: TisModel<T>,
    selected: bool,
    phase: Phase,
    transfers: u32,
    /// Wait states to insert on transfer `n`; `u32::MAX` never ends (a hung TPM).
    pub wait_plan: fn(u32) -> u32,
    pending: Option<(bool, u16, usize)>,
    pub wait_states_inserted: u32,
}

impl<T: TpmTransport> SpiTpm<T> {
    pub fn new(model: TisModel<T>, wait_plan: fn(u32) -> u32) -> Self {
        SpiTpm {
            model,
            selected: false,
            phase: Phase::Header(Vec::new()),
            transfers: 0,
            wait_plan,
            pending: None,
            wait_states_inserted: 0,
        }
    }

    fn exchange(&mut self, mosi: u8) -> u8 {
        if !self.selected {
            self.model
                .violations
                .push("clocked with chip select released".into());
            return 0xff;
        }
        match &mut self.phase {
            Phase::Header(h) => {
                h.push(mosi);
                if h.len() < 4 {
                    return 0;
                }
                let read = h[0] & 0x80 != 0;
                let len = (h[0] & 0x3f) as usize + 1;
                let addr = u32::from_be_bytes([0, h[1], h[2], h[3]]);
                if addr & 0xff_f000 != 0xd4_0000 {
                    self.model
                        .violations
                        .push(format!("address {addr:#08x} outside locality 0"));
                }
                let waits = (self.wait_plan)(self.transfers);
                self.transfers += 1;
                self.pending = Some((read, (addr & 0xfff) as u16, len));
                if waits == 0 {
                    self.start_data();
                    1
                } else {
                    self.phase = Phase::Wait { left: waits };
                    0
                }
            }
            Phase::Wait { left } => {
                self.wait_states_inserted += 1;
                *left = left.saturating_sub(1);
                if *left == 0 {
                    self.start_data();
                    1
                } else {
                    0
                }
            }
            Phase::Data {
                read,
                addr,
                len,
                pos,
            } => {
                if *pos >= *len {
                    self.model
                        .violations
                        .push("clocked past the header's length".into());
                    return 0xff;
                }
                let a = if *addr == reg::DATA_FIFO {
                    *addr
                } else {
                    *addr + *pos as u16
                };
                *pos += 1;
                if *read {
                    let (a, m) = (a, &mut self.model);
                    m.read_byte(a)
                } else {
                    self.model.write_byte(a, mosi);
                    0xff
                }
            }
        }
    }

    fn start_data(&mut self) {
        let (read, addr, len) = self.pending.take().unwrap();
        if addr == reg::DATA_FIFO {
            self.model
                .check_burst(if read { "FIFO read" } else { "FIFO write" }, len);
        }
        self.phase = Phase::Data {
            read,
            addr,
            len,
            pos: 0,
        };
    }

    fn select(&mut self, low: bool) {
        if low == self.selected {
            self.model.violations.push("chip select set twice".into());
        }
        if !low {
            match &self.phase {
                Phase::Data { len, pos, .. } if pos == len => {}
                Phase::Header(h) if h.is_empty() => {}
                other => self
                    .model
                    .violations
                    .push(format!("chip select released mid-transfer ({other:?})")),
            }
        }
        self.selected = low;
        self.phase = Phase::Header(Vec::new());
    }
}

/// The bus and the chip-select line, both wired to the same slave.
pub struct Bus<T: TpmTransport>(pub Rc<RefCell<SpiTpm<T>>>);
pub struct ChipSelect<T: TpmTransport>(pub Rc<RefCell<SpiTpm<T>>>, bool);

pub fn wire<T: TpmTransport>(slave: SpiTpm<T>) -> (Rc<RefCell<SpiTpm<T>>>, Bus<T>, ChipSelect<T>) {
    let shared = Rc::new(RefCell::new(slave));
    (
        shared.clone(),
        Bus(shared.clone()),
        ChipSelect(shared, true),
    )
}

impl<T: TpmTransport> embedded_hal::spi::ErrorType for Bus<T> {
    type Error = Infallible;
}

impl<T: TpmTransport> embedded_hal::spi::SpiBus<u8> for Bus<T> {
    fn read(&mut self, words: &mut [u8]) -> Result<(), Infallible> {
        let mut s = self.0.borrow_mut();
        for w in words {
            *w = s.exchange(0);
        }
        Ok(())
    }
    fn write(&mut self, words: &[u8]) -> Result<(), Infallible> {
        let mut s = self.0.borrow_mut();
        for &w in words {
            s.exchange(w);
        }
        Ok(())
    }
    fn transfer(&mut self, read: &mut [u8], write: &[u8]) -> Result<(), Infallible> {
        let mut s = self.0.borrow_mut();
        for i in 0..read.len().max(write.len()) {
            let r = s.exchange(write.get(i).copied().unwrap_or(0));
            if let Some(slot) = read.get_mut(i) {
                *slot = r;
            }
        }
        Ok(())
    }
    fn transfer_in_place(&mut self, words: &mut [u8]) -> Result<(), Infallible> {
        let mut s = self.0.borrow_mut();
        for w in words {
            *w = s.exchange(*w);
        }
        Ok(())
    }
    fn flush(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
}

impl<T: TpmTransport> embedded_hal::digital::ErrorType for ChipSelect<T> {
    type Error = Infallible;
}

impl<T: TpmTransport> embedded_hal::digital::OutputPin for ChipSelect<T> {
    fn set_low(&mut self) -> Result<(), Infallible> {
        self.1 = false;
        self.0.borrow_mut().select(true);
        Ok(())
    }
    fn set_high(&mut self) -> Result<(), Infallible> {
        // The driver deasserts once at construction, before any transfer: not a violation.
        if !self.1 {
            self.0.borrow_mut().select(false);
        }
        self.1 = true;
        Ok(())
    }
}

/// A delay that does not sleep but counts; the model answers instantly.
#[derive(Default)]
pub struct CountingDelay(pub u64);

impl embedded_hal::delay::DelayNs for CountingDelay {
    fn delay_ns(&mut self, ns: u32) {
        self.0 += u64::from(ns);
    }
}
