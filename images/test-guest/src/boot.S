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
.if \index == 12
    // A synchronous exception from EL0 in AArch32: only the `svc` that
    // ends `run_aarch32_user`'s code is expected here.
    b       aarch32_back
.else
    sub     sp, sp, #{FRAME}
    stp     x0, x1, [sp, #0]
    mov     x0, #\index
    b       exception_common
.endif
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

// u64 run_aarch32_user(u64 address): runs `aarch32_user` at EL0 in AArch32
// (User mode, A32, interrupts masked) with r0 = address; the code loads
// the 32-bit word there into r1 and calls `svc #0`, which comes back
// through vector 12 to `aarch32_back`; returns r1. Coming back from
// AArch32 leaves x15-x30 UNKNOWN, so every callee-saved register is kept
// on the stack (SP_EL1, which AArch32 EL0 cannot touch) and its address in
// `aarch32_saved_sp`.
.section .text.aarch32, "ax"
.global run_aarch32_user
run_aarch32_user:
    stp     x19, x20, [sp, #-96]!
    stp     x21, x22, [sp, #16]
    stp     x23, x24, [sp, #32]
    stp     x25, x26, [sp, #48]
    stp     x27, x28, [sp, #64]
    stp     x29, x30, [sp, #80]
    adrp    x1, aarch32_saved_sp
    mov     x2, sp
    str     x2, [x1, :lo12:aarch32_saved_sp]
    adr     x1, aarch32_user
    msr     elr_el1, x1
    mov     x1, #0x1d0              // M = 0b10000 (User, AArch32), A, I, F set
    msr     spsr_el1, x1
    isb
    eret

aarch32_back:
    mov     w0, w1                  // r1: what the load read
    adrp    x1, aarch32_saved_sp
    ldr     x2, [x1, :lo12:aarch32_saved_sp]
    mov     sp, x2
    ldp     x21, x22, [sp, #16]
    ldp     x23, x24, [sp, #32]
    ldp     x25, x26, [sp, #48]
    ldp     x27, x28, [sp, #64]
    ldp     x29, x30, [sp, #80]
    ldp     x19, x20, [sp], #96
    ret

.balign 4
aarch32_user:
    .word   0xe5901000              // ldr r1, [r0]
    .word   0xef000000              // svc #0

.section .bss.aarch32, "aw"
.balign 8
aarch32_saved_sp:
    .quad   0
