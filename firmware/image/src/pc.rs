//! The few PC devices the image touches: 16550 UARTs (COM1 for the console, COM2 for the
//! link), the TSC calibrated against the PIT, QEMU's isa-debug-exit, and the TPM's TIS
//! registers at 0xFED40000.

use core::arch::asm;

use attest_firmware::tpm::tis::{TisRegisters, reg};
use attest_firmware::tpm::transport::TransportError;

fn outb(port: u16, v: u8) {
    // SAFETY: port I/O to PC devices this image owns; no memory is touched.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") v, options(nomem, nostack, preserves_flags))
    }
}

fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: as above.
    unsafe {
        asm!("in al, dx", out("al") v, in("dx") port, options(nomem, nostack, preserves_flags))
    }
    v
}

fn outl(port: u16, v: u32) {
    // SAFETY: as above.
    unsafe {
        asm!("out dx, eax", in("dx") port, in("eax") v, options(nomem, nostack, preserves_flags))
    }
}

pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: reads the time-stamp counter.
    unsafe { asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) }
    (u64::from(hi) << 32) | u64::from(lo)
}

/// A 16550 UART at `base`, 115200 8N1, polled.
pub struct Uart {
    base: u16,
}

pub const COM1: u16 = 0x3f8;
pub const COM2: u16 = 0x2f8;

impl Uart {
    pub fn new(base: u16) -> Uart {
        outb(base + 1, 0x00); // no interrupts
        outb(base + 3, 0x80); // DLAB
        outb(base, 0x01); // divisor 1: 115200 baud
        outb(base + 1, 0x00);
        outb(base + 3, 0x03); // 8N1
        outb(base + 2, 0xc7); // FIFOs on, cleared
        outb(base + 4, 0x03); // DTR, RTS
        Uart { base }
    }

    pub fn write_byte(&mut self, b: u8) {
        while inb(self.base + 5) & 0x20 == 0 {}
        outb(self.base, b);
    }

    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_byte(b);
        }
    }

    pub fn read_byte(&mut self) -> Option<u8> {
        (inb(self.base + 5) & 1 != 0).then(|| inb(self.base))
    }
}

impl core::fmt::Write for Uart {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                self.write_byte(b'\r');
            }
            self.write_byte(b);
        }
        Ok(())
    }
}

/// Time from the TSC, whose rate is measured once against the PIT (1.193182 MHz).
#[derive(Clone, Copy)]
pub struct Clock {
    pub ticks_per_us: u64,
}

impl Clock {
    pub fn calibrate() -> Clock {
        // PIT channel 2, mode 0, gate on, speaker off: count 11932 ≈ 10 ms.
        const COUNT: u16 = 11_932;
        outb(0x61, (inb(0x61) & !0x02) | 0x01);
        outb(0x43, 0b1011_0000);
        outb(0x42, COUNT as u8);
        outb(0x42, (COUNT >> 8) as u8);
        let start = rdtsc();
        while inb(0x61) & 0x20 == 0 {}
        let ticks = rdtsc() - start;
        Clock {
            ticks_per_us: (ticks / 10_000).max(1),
        }
    }

    pub fn now_us(&self) -> u64 {
        rdtsc() / self.ticks_per_us
    }
}

impl embedded_hal::delay::DelayNs for Clock {
    fn delay_ns(&mut self, ns: u32) {
        let end = rdtsc() + u64::from(ns) * self.ticks_per_us / 1000;
        while rdtsc() < end {
            core::hint::spin_loop();
        }
    }
}

/// QEMU's `-device isa-debug-exit,iobase=0xf4,iosize=0x04`: QEMU exits with `(code << 1) | 1`.
pub fn exit(code: u8) -> ! {
    outl(0xf4, u32::from(code));
    // Not under QEMU (or no exit device): stop here.
    loop {
        // SAFETY: halts the CPU; interrupts are off.
        unsafe { asm!("cli; hlt", options(nomem, nostack)) }
    }
}

/// The TIS registers of locality 0, memory-mapped (mapped uncached by the boot stub).
pub struct Mmio;

const TIS_BASE: usize = 0xfed4_0000;

impl TisRegisters for Mmio {
    fn read(&mut self, r: u16, buf: &mut [u8]) -> Result<(), TransportError> {
        for (i, b) in buf.iter_mut().enumerate() {
            let at = if r == reg::DATA_FIFO { r } else { r + i as u16 };
            // SAFETY: inside the TIS page, identity-mapped uncached; byte access is
            // allowed for every TIS register.
            *b = unsafe { core::ptr::read_volatile((TIS_BASE + usize::from(at)) as *const u8) };
        }
        Ok(())
    }

    fn write(&mut self, r: u16, data: &[u8]) -> Result<(), TransportError> {
        for (i, &b) in data.iter().enumerate() {
            let at = if r == reg::DATA_FIFO { r } else { r + i as u16 };
            // SAFETY: as above.
            unsafe { core::ptr::write_volatile((TIS_BASE + usize::from(at)) as *mut u8, b) };
        }
        Ok(())
    }
}
