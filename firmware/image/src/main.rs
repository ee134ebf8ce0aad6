//! The boot-time agent as a bare-metal x86_64 image: QEMU q35 (or a PC booting it through
//! a PVH-capable loader) with a TIS TPM. COM1 is the human console; COM2 carries the framed
//! link to `attest-agent relay`. The command line says the mode and pins the server's key.
//!
//! It prints one result line, timings and its stack use, then leaves through
//! isa-debug-exit with the agent's exit code (QEMU's status is `(code << 1) | 1`).
#![no_std]
#![no_main]

mod boot;
mod pc;

use core::fmt::Write as _;

use attest_common::text::Escaped;
use attest_firmware::agent::{Agent, Mode, Outcome};
use attest_firmware::run::{Link, LinkError, Platform};
use attest_firmware::tpm::Tpm;
use attest_firmware::tpm::tis::Tis;
use attest_firmware::{bootargs, smbios};
use pc::{COM1, COM2, Clock, Uart};

const STACK_PAINT: u8 = 0xa5;
/// hvm_start_info magic (xen/include/public/arch-x86/hvm/start_info.h).
const PVH_MAGIC: u32 = 0x336e_c578;

/// The link on COM2; notes when the first request (the evidence) went out.
struct UartLink {
    uart: Uart,
    clock: Clock,
    first_sent_us: Option<u64>,
}

impl Link for UartLink {
    fn send(&mut self, bytes: &[u8]) -> Result<(), LinkError> {
        self.uart.write(bytes);
        self.first_sent_us.get_or_insert(self.clock.now_us());
        Ok(())
    }

    /// Waits up to 100 ms for a byte, then takes what has arrived.
    fn recv(&mut self, buf: &mut [u8]) -> Result<usize, LinkError> {
        let deadline = self.clock.now_us() + 100_000;
        let mut n = 0;
        while n < buf.len() {
            match self.uart.read_byte() {
                Some(b) => {
                    buf[n] = b;
                    n += 1;
                }
                None if n > 0 || self.clock.now_us() >= deadline => break,
                None => core::hint::spin_loop(),
            }
        }
        Ok(n)
    }
}

/// Fills the unused part of the stack with a pattern, to measure the high-water mark.
fn paint_stack() {
    let (bottom, _) = boot::stack();
    let here = &raw const bottom as usize;
    let mut p = bottom;
    while p + 512 < here {
        // SAFETY: below our own frame, inside the stack reserved in .bss, not yet used.
        unsafe { core::ptr::write_volatile(p as *mut u8, STACK_PAINT) };
        p += 1;
    }
}

/// Painted bytes at the stack's bottom that must still be paint when the boot ends.
const STACK_GUARD: usize = 64;

fn stack_used() -> usize {
    let (bottom, top) = boot::stack();
    let mut p = bottom;
    // SAFETY: reads inside the stack reserved in .bss.
    while p < top && unsafe { core::ptr::read_volatile(p as *const u8) } == STACK_PAINT {
        p += 1;
    }
    top - p
}

/// The command line from PVH's start info.
fn cmdline(start_info: u32) -> &'static str {
    let base = start_info as usize;
    if base == 0 {
        return "";
    }
    // SAFETY: the loader passes a valid hvm_start_info in low memory (identity-mapped).
    let (magic, paddr) = unsafe {
        (
            core::ptr::read_volatile(base as *const u32),
            core::ptr::read_volatile((base + 24) as *const u64),
        )
    };
    if magic != PVH_MAGIC || paddr == 0 || paddr >= 1 << 30 {
        return "";
    }
    // SAFETY: a NUL-terminated string in mapped low memory; at most 4 KiB is read.
    let bytes = unsafe { core::slice::from_raw_parts(paddr as *const u8, 4096) };
    let len = bytes.iter().position(|&b| b == 0).unwrap_or(0);
    core::str::from_utf8(&bytes[..len]).unwrap_or("")
}

fn smbios_info() -> smbios::SystemInfo<'static> {
    let (seg_base, seg_len) = smbios::F_SEGMENT;
    // SAFETY: the BIOS F segment is RAM/ROM below 1 MiB, identity-mapped.
    let segment = unsafe { core::slice::from_raw_parts(seg_base as *const u8, seg_len) };
    match smbios::find_table(segment) {
        Some(t) if t.address < 1 << 30 && t.length <= 0x1_0000 => {
            // SAFETY: the table the entry point names, inside the mapped first GiB.
            let table =
                unsafe { core::slice::from_raw_parts(t.address as usize as *const u8, t.length) };
            smbios::system_info(table)
        }
        _ => smbios::SystemInfo::default(),
    }
}

#[unsafe(no_mangle)]
extern "C" fn rust_main(start_info: u32) -> ! {
    let reset_to_main = pc::rdtsc();
    paint_stack();
    let mut console = Uart::new(COM1);
    let clock = Clock::calibrate();
    let _ = writeln!(
        console,
        "itl-firmware {}: started {} ms after reset",
        env!("CARGO_PKG_VERSION"),
        reset_to_main / clock.ticks_per_us / 1000
    );
    let args = match bootargs::parse(cmdline(start_info)) {
        Ok(a) => a,
        Err(e) => {
            let _ = writeln!(console, "itl-firmware: command line: {e}");
            pc::exit(1)
        }
    };
    let info = smbios_info();
    let platform = Platform {
        hw_uuid: info.uuid_str(),
        hw_serial: info.serial,
        hw_product: info.product,
        now: None,
    };
    let _ = writeln!(
        console,
        "itl-firmware: mode={} uuid={} serial={}",
        match args.mode {
            Mode::Register => "register",
            Mode::Attest => "attest",
            Mode::Receipt => "receipt",
        },
        platform.hw_uuid.unwrap_or("-"),
        platform.hw_serial.unwrap_or("-"),
    );

    let mut tpm = Tpm::new(Tis::new(pc::Mmio, clock));
    let mut link = UartLink {
        uart: Uart::new(COM2),
        clock,
        first_sent_us: None,
    };
    // The agent lives in .bss (not on the stack, and not as 8 KiB of .data in the image).
    static mut AGENT: core::mem::MaybeUninit<Agent> = core::mem::MaybeUninit::uninit();
    let slot = &raw mut AGENT;
    // SAFETY: the only reference to AGENT, taken once on the only thread.
    let agent = unsafe { (*slot).write(Agent::idle()) };
    let outcome = attest_firmware::run::boot(
        agent,
        &mut tpm,
        &mut link,
        args.mode,
        &platform,
        args.server_key.as_ref().map(|k| &k[..]),
    );
    report(&mut console, &outcome);
    let ms = |us: u64| us / 1000;
    if let Some(sent) = link.first_sent_us {
        let _ = writeln!(
            console,
            "itl-firmware: evidence sent {} ms after reset",
            ms(sent)
        );
    }
    let (ram, bss) = boot::footprint();
    let (bottom, top) = boot::stack();
    let used = stack_used();
    let _ = writeln!(
        console,
        "itl-firmware: done {} ms after reset; RAM {} bytes (.bss {}), stack used {} of {}",
        ms(clock.now_us()),
        ram,
        bss,
        used,
        top - bottom
    );
    // The paint at the bottom is gone: the stack ran into the .bss below it, and nothing
    // this boot computed can be trusted.
    if used + STACK_GUARD > top - bottom {
        let _ = writeln!(console, "itl-firmware: stack exhausted");
        pc::exit(1)
    }
    let code = outcome.exit_code();
    let _ = writeln!(console, "itl-firmware: exit {code}");
    pc::exit(code)
}

fn report(console: &mut Uart, outcome: &Outcome) {
    let _ = match outcome {
        Outcome::Registered {
            machine_id,
            status,
            iso_url,
        } => writeln!(
            console,
            "itl-firmware: registered machine={} status={status} iso_url={} (signed answer)",
            Escaped(machine_id),
            Escaped(iso_url.as_deref().unwrap_or("-"))
        ),
        Outcome::Attested {
            machine_id,
            status,
            action,
            config_url,
            config_sha384,
            seconds_to_next_attestation,
        } => {
            let mut hex = [0u8; 96];
            let digest = match config_sha384 {
                Some(d) => attest_common::hex::encode(&d[..], &mut hex),
                None => "-",
            };
            // The config URL is a single-use bearer link to the config's secrets: the
            // console (a serial log anyone may read) shows where, not the token.
            let base = config_url
                .as_deref()
                .and_then(|u| u.rsplit_once('/'))
                .map_or("-", |(base, _)| base);
            writeln!(
                console,
                "itl-firmware: attested machine={} status={status} action={action} \
                 config_url={}/<single use, not shown> config_sha384={digest} \
                 next_in={seconds_to_next_attestation}s (signature verified)",
                Escaped(machine_id),
                Escaped(base)
            )
        }
        Outcome::ReceiptSaved => writeln!(console, "itl-firmware: receipt saved by the relay"),
        Outcome::Refused { status, code } => {
            // Unsigned, from the relay: escaped, so it cannot forge a console line.
            writeln!(
                console,
                "itl-firmware: refused by the server: {status} {}",
                Escaped(code)
            )
        }
        Outcome::Failed(e) => writeln!(console, "itl-firmware: failed: {e}"),
    };
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let mut console = Uart::new(COM1);
    let _ = writeln!(console, "itl-firmware: panic: {info}");
    pc::exit(1)
}

/// Referenced by core's unwinding tables when the image is built with `panic = "unwind"`
/// (dev and test profiles); never called, since the panic handler never returns.
#[unsafe(no_mangle)]
extern "C" fn rust_eh_personality() {}
