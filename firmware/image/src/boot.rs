//! From the PVH entry to Rust: QEMU (and Xen) start a PVH kernel in 32-bit protected mode,
//! flat segments, paging off, `ebx` pointing at `hvm_start_info`. The stub zeroes .bss,
//! builds identity page tables (1 GiB pages, so two tables, 8 KiB: the first GiB for the
//! image and the BIOS tables, the fourth, uncached, for the TPM's MMIO at 0xFED40000; the
//! CPU must offer 1 GiB pages, `-cpu qemu64,+pdpe1gb`), enables SSE (the host target's code
//! uses it), switches to long mode and calls `rust_main(start_info)`.
//!
//! Also here: the memory functions the compiler calls (`compiler_builtins` leaves them to
//! the C library on this target, and there is none).

core::arch::global_asm!(
    r#"
    .section .note.pvh, "a", @note
    .balign 4
    .long 4
    .long 4
    .long 18            /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .long pvh_start
    .balign 4

    .section .bss.pagetables, "aw", @nobits
    .balign 4096
pml4: .skip 4096
pdpt: .skip 4096

    .section .bss.stack, "aw", @nobits
    .balign 16
    .global __stack_bottom
__stack_bottom:
    .skip 0xb000        /* 44 KiB: the deepest boot measured uses 35 KiB (README) */
    .global __stack_top
__stack_top:

    .section .rodata.gdt, "a"
    .balign 16
gdt:
    .quad 0
    .quad 0x00af9a000000ffff    /* 0x08: 64-bit code */
    .quad 0x00cf92000000ffff    /* 0x10: data */
gdt_end:
gdt_ptr:
    .word gdt_end - gdt - 1
    .long gdt

    .section .text.boot, "ax"
    .code32
    .global pvh_start
pvh_start:
    cli
    cld
    mov esi, ebx

    mov edi, offset __bss_start
    mov ecx, offset __bss_end
    sub ecx, edi
    xor eax, eax
    rep stosb

    mov eax, offset pdpt
    or eax, 3
    mov dword ptr [pml4], eax
    /* 0..1 GiB write-back; 3..4 GiB PCD|PWT (MMIO). PS: a 1 GiB page. */
    mov dword ptr [pdpt], 0x83
    mov dword ptr [pdpt + 24], 0xc0000000 | 0x9b

    mov eax, cr4
    or eax, (1 << 5) | (1 << 9) | (1 << 10)     /* PAE, OSFXSR, OSXMMEXCPT */
    mov cr4, eax
    mov eax, offset pml4
    mov cr3, eax
    mov ecx, 0xc0000080                         /* EFER */
    rdmsr
    or eax, 1 << 8                              /* LME */
    wrmsr
    mov eax, cr0
    and eax, ~(1 << 2)                          /* no x87 emulation */
    or eax, (1 << 31) | (1 << 1) | 1            /* PG, MP, PE */
    mov cr0, eax

    lgdt [gdt_ptr]
    mov eax, 0x08
    push eax
    mov eax, offset long_mode
    push eax
    retf

    .code64
long_mode:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    xor eax, eax
    mov fs, ax
    mov gs, ax
    mov rsp, offset __stack_top
    mov edi, esi
    call rust_main
2:
    hlt
    jmp 2b

    .text
    .global memcpy
memcpy:
    mov rax, rdi
    mov rcx, rdx
    rep movsb
    ret

    .global memset
memset:
    mov r9, rdi
    mov eax, esi
    mov rcx, rdx
    rep stosb
    mov rax, r9
    ret

    .global memmove
memmove:
    mov rax, rdi
    mov rcx, rdx
    cmp rdi, rsi
    jbe 3f
    lea rsi, [rsi + rdx - 1]
    lea rdi, [rdi + rdx - 1]
    std
    rep movsb
    cld
    ret
3:
    rep movsb
    ret

    .global memcmp
    .global bcmp
memcmp:
bcmp:
    xor eax, eax
    test rdx, rdx
    jz 5f
4:
    movzx eax, byte ptr [rdi]
    movzx ecx, byte ptr [rsi]
    sub eax, ecx
    jnz 5f
    inc rdi
    inc rsi
    dec rdx
    jnz 4b
5:
    ret
"#
);

unsafe extern "C" {
    static __stack_bottom: u8;
    static __stack_top: u8;
    static __image_start: u8;
    static __image_end: u8;
    static __bss_start: u8;
    static __bss_end: u8;
}

/// Stack bounds, for the high-water mark.
pub fn stack() -> (usize, usize) {
    (
        &raw const __stack_bottom as usize,
        &raw const __stack_top as usize,
    )
}

/// Bytes from the image start to the end of .bss: everything the image occupies in RAM.
pub fn footprint() -> (usize, usize) {
    (
        &raw const __image_end as usize - &raw const __image_start as usize,
        &raw const __bss_end as usize - &raw const __bss_start as usize,
    )
}
