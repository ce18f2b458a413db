// Entry, exception vectors and the isolation probe of the test guest.
//
// Assembled through `global_asm!` in boot.rs, which supplies `main`,
// `exception` and the frame size. Entered per the Linux arm64 boot
// protocol: EL1h, MMU and caches off, x0 = physical address of the device
// tree. With the MMU off every data access is Device-nGnRnE: the code is
// built for a strict-alignment target and uses no exclusive accesses.

.section .text.head, "ax"
.global _start
_start:
    // The arm64 Image header (Linux Documentation/arch/arm64/booting.rst),
    // so a loader that follows the boot protocol (the VMM, QEMU -kernel)
    // puts the image at RAM base + text_offset and knows its full size.
    b       primary_entry           // code0: jump over the header
    .long   0                       // code1
    .quad   0x80000                 // text_offset from a 2 MiB aligned RAM base
    .quad   __image_size            // effective image size, BSS and stack included
    .quad   0x2                     // flags: little endian, 4 KiB pages, base near RAM start
    .quad   0                       // res2
    .quad   0                       // res3
    .quad   0                       // res4
    .long   0x644d5241              // magic "ARM\x64"
    .long   0                       // res5

primary_entry:
    msr     daifset, #0xf
    mov     x19, x0                 // the device tree address
    adrp    x0, __bss_start
    add     x0, x0, :lo12:__bss_start
    adrp    x1, __bss_end
    add     x1, x1, :lo12:__bss_end
1:  cmp     x0, x1
    b.hs    2f
    stp     xzr, xzr, [x0], #16
    b       1b
2:  adrp    x0, __stack_top
    add     sp, x0, :lo12:__stack_top
    adrp    x0, vectors
    add     x0, x0, :lo12:vectors
    msr     vbar_el1, x0
    isb
    mov     x0, x19
    bl      {main}                  // never returns
3:  wfi
    b       3b

// The vector table: 16 entries of 0x80 bytes. Each saves x0/x1, puts its
// index in x0 (0-3: current EL with SP_EL0, 4-7: current EL with SP_ELx,
// 8-15: lower ELs; sync, IRQ, FIQ, SError in each group) and goes on to
// exception_common, which saves the rest of the caller-saved registers
// and calls the Rust `exception(index)`. ELR_EL1 and SPSR_EL1 are not
// saved: the handlers take no nested exceptions.
.section .text.vectors, "ax"
.balign 0x800
vectors:
.irp index, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15
    .balign 0x80
    sub     sp, sp, #{FRAME}
    stp     x0, x1, [sp, #0]
    mov     x0, #\index
    b       exception_common
.endr

exception_common:
    stp     x2, x3, [sp, #16]
    stp     x4, x5, [sp, #32]
    stp     x6, x7, [sp, #48]
    stp     x8, x9, [sp, #64]
    stp     x10, x11, [sp, #80]
    stp     x12, x13, [sp, #96]
    stp     x14, x15, [sp, #112]
    stp     x16, x17, [sp, #128]
    stp     x18, x29, [sp, #144]
    str     x30, [sp, #160]
    bl      {exception}
    ldp     x2, x3, [sp, #16]
    ldp     x4, x5, [sp, #32]
    ldp     x6, x7, [sp, #48]
    ldp     x8, x9, [sp, #64]
    ldp     x10, x11, [sp, #80]
    ldp     x12, x13, [sp, #96]
    ldp     x14, x15, [sp, #112]
    ldp     x16, x17, [sp, #128]
    ldp     x18, x29, [sp, #144]
    ldr     x30, [sp, #160]
    ldp     x0, x1, [sp, #0]
    add     sp, sp, #{FRAME}
    eret

// u32 probe_read32(u64 address, u32 if_aborted): one 32-bit load from
// `address`. If the load takes a synchronous abort, the handler skips it
// (ELR_EL1 = probe_load + 4, only when ELR_EL1 is exactly probe_load) and
// the result is `if_aborted`.
.section .text.probe, "ax"
.global probe_read32
.global probe_load
probe_read32:
probe_load:
    ldr     w1, [x0]
    mov     w0, w1
    ret
