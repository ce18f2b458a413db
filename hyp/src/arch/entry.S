// Boot entry, secondary-core entry and the EL2 exception vectors.
//
// Assembled through `global_asm!` in arch/mod.rs, which supplies the
// constants used here (stack size, structure offsets) from the Rust
// definitions, so no offset is kept in sync by hand.
//
// Register use on entry (Linux arm64 boot protocol, which QEMU and the
// Raspberry Pi firmware follow): x0 = physical address of the device tree,
// MMU off, caches off, interrupts masked.

.section .text.boot, "ax"
.global _start
_start:
    // The arm64 Image header (Linux Documentation/arch/arm64/booting.rst):
    // QEMU's -kernel and the Pi firmware read it to place the image.
    b       primary_entry           // code0: jump over the header
    .long   0                       // code1
    .quad   __text_offset           // image load offset from a 2 MiB aligned RAM base
    .quad   __image_size            // effective image size, BSS included
    .quad   0x2                     // flags: little endian, 4 KiB pages, 2 MiB aligned base
    .quad   0                       // res2
    .quad   0                       // res3
    .quad   0                       // res4
    .long   0x644d5241              // magic "ARM\x64"
    .long   0                       // res5

primary_entry:
    msr     daifset, #0xf
    mov     x19, x0                 // keep the device tree address
    mrs     x20, CurrentEL
    lsr     x20, x20, #2
    cmp     x20, #3
    b.eq    drop_from_el3
    cmp     x20, #2
    b.eq    at_el2
    // Entered at EL1 (or EL0): there is no way up. Say so and stop.
    bl      zero_bss_and_set_boot_stack
    mov     x0, x19
    mov     x1, x20
    bl      boot_at_wrong_level
    b       park

drop_from_el3:
    // SCR_EL3: NS (bit 0), RES1 bits 4-5, HCE (bit 8: HVC enabled),
    // RW (bit 10: EL2 is AArch64).
    mov     x1, #0x531
    msr     scr_el3, x1
    // SPSR_EL3: return to EL2h with D, A, I, F masked.
    mov     x1, #0x3c9
    msr     spsr_el3, x1
    adr     x1, at_el2
    msr     elr_el3, x1
    eret

at_el2:
    bl      zero_bss_and_set_boot_stack
    mov     x0, x19
    bl      boot_primary            // Rust; never returns
    b       park

// Zeroes BSS and points SP at the top of core 0's stack. Uses x0-x2 only;
// the MMU is off, so these stores go straight to memory.
zero_bss_and_set_boot_stack:
    adrp    x0, __bss_start
    add     x0, x0, :lo12:__bss_start
    adrp    x1, __bss_end
    add     x1, x1, :lo12:__bss_end
1:  cmp     x0, x1
    b.hs    2f
    stp     xzr, xzr, [x0], #16
    b       1b
2:  adrp    x0, BOOT_STACKS
    add     x0, x0, :lo12:BOOT_STACKS
    mov     x1, #{STACK_SIZE}
    add     sp, x0, x1
    ret

// Secondary cores start here (PSCI CPU_ON on virt, the spin table on the
// Pi 4), at EL2 with the MMU off. The boot core left the translation
// registers and the list of MPIDRs in SECONDARY_BOOT, cleaned to the point
// of coherency; the core finds its index there, turns the MMU on with the
// same table and only then touches its stack (so no stale cache line can
// shadow what it writes).
.global secondary_entry
secondary_entry:
    msr     daifset, #0xf
    mrs     x1, CurrentEL
    cmp     x1, #(2 << 2)
    b.ne    park
    mrs     x1, mpidr_el1
    mov     x2, #0xffffff           // Aff2.Aff1.Aff0
    orr     x2, x2, #(0xff << 32)   // Aff3
    and     x1, x1, x2
    adrp    x3, SECONDARY_BOOT
    add     x3, x3, :lo12:SECONDARY_BOOT
    ldr     x4, [x3, #{SECONDARY_CORES}]
    add     x5, x3, #{SECONDARY_MPIDRS}
    mov     x6, #0
1:  cmp     x6, x4
    b.hs    park                    // not a core we started
    ldr     x7, [x5, x6, lsl #3]
    cmp     x7, x1
    b.eq    2f
    add     x6, x6, #1
    b       1b
2:  ldr     x7, [x3, #{SECONDARY_MAIR}]
    msr     mair_el2, x7
    ldr     x7, [x3, #{SECONDARY_TCR}]
    msr     tcr_el2, x7
    ldr     x7, [x3, #{SECONDARY_TTBR0}]
    msr     ttbr0_el2, x7
    isb
    tlbi    alle2
    dsb     nsh
    ic      iallu
    dsb     nsh
    isb
    ldr     x7, [x3, #{SECONDARY_SCTLR}]
    msr     sctlr_el2, x7
    isb
    // SP = BOOT_STACKS + (index + 1) * STACK_SIZE
    adrp    x0, BOOT_STACKS
    add     x0, x0, :lo12:BOOT_STACKS
    add     x1, x6, #1
    mov     x2, #{STACK_SIZE}
    madd    x0, x1, x2, x0
    mov     sp, x0
    mov     x0, x6
    bl      boot_secondary          // Rust; never returns
    b       park

.global park
park:
    msr     daifset, #0xf
1:  wfe
    b       1b

// ---------------------------------------------------------------------------
// EL2 exception vectors: 4 groups (current EL with SP0, current EL with SPx,
// lower EL AArch64, lower EL AArch32) of 4 kinds (synchronous, IRQ, FIQ,
// SError). Each entry saves x0-x30 in an ExceptionFrame on the stack and
// hands the frame and its vector index to `handle_exception` in Rust.

.macro VECTOR index
    .balign 0x80
    sub     sp, sp, #{FRAME_SIZE}
    stp     x0, x1, [sp, #(0 * 16)]
    stp     x2, x3, [sp, #(1 * 16)]
    stp     x4, x5, [sp, #(2 * 16)]
    stp     x6, x7, [sp, #(3 * 16)]
    stp     x8, x9, [sp, #(4 * 16)]
    stp     x10, x11, [sp, #(5 * 16)]
    stp     x12, x13, [sp, #(6 * 16)]
    stp     x14, x15, [sp, #(7 * 16)]
    stp     x16, x17, [sp, #(8 * 16)]
    stp     x18, x19, [sp, #(9 * 16)]
    stp     x20, x21, [sp, #(10 * 16)]
    stp     x22, x23, [sp, #(11 * 16)]
    stp     x24, x25, [sp, #(12 * 16)]
    stp     x26, x27, [sp, #(13 * 16)]
    stp     x28, x29, [sp, #(14 * 16)]
    mov     x1, #\index
    b       exception_common
.endm

// Exceptions from EL0 (native threads): the registers go straight into
// the current thread's save area, whose address is the first word of the
// core's CoreBlock (TPIDR_EL2). x0 and x1 are parked on the EL2 stack
// while that address is found.
.macro LOWER_VECTOR index
    .balign 0x80
    stp     x0, x1, [sp, #-16]!
    mrs     x0, tpidr_el2
    ldr     x0, [x0]
    mov     x1, #\index
    b       lower_common
.endm

.section .text.vectors, "ax"
.balign 0x800
.global el2_vectors
el2_vectors:
    VECTOR 0
    VECTOR 1
    VECTOR 2
    VECTOR 3
    VECTOR 4
    VECTOR 5
    VECTOR 6
    VECTOR 7
    LOWER_VECTOR 8
    LOWER_VECTOR 9
    LOWER_VECTOR 10
    LOWER_VECTOR 11
    VECTOR 12
    VECTOR 13
    VECTOR 14
    VECTOR 15

lower_common:
    // x0 = the thread's UserContext, x1 = vector; the thread's x0 and x1
    // are on the stack.
    stp     x2, x3, [x0, #({CONTEXT_X} + 2 * 8)]
    stp     x4, x5, [x0, #({CONTEXT_X} + 4 * 8)]
    stp     x6, x7, [x0, #({CONTEXT_X} + 6 * 8)]
    stp     x8, x9, [x0, #({CONTEXT_X} + 8 * 8)]
    stp     x10, x11, [x0, #({CONTEXT_X} + 10 * 8)]
    stp     x12, x13, [x0, #({CONTEXT_X} + 12 * 8)]
    stp     x14, x15, [x0, #({CONTEXT_X} + 14 * 8)]
    stp     x16, x17, [x0, #({CONTEXT_X} + 16 * 8)]
    stp     x18, x19, [x0, #({CONTEXT_X} + 18 * 8)]
    stp     x20, x21, [x0, #({CONTEXT_X} + 20 * 8)]
    stp     x22, x23, [x0, #({CONTEXT_X} + 22 * 8)]
    stp     x24, x25, [x0, #({CONTEXT_X} + 24 * 8)]
    stp     x26, x27, [x0, #({CONTEXT_X} + 26 * 8)]
    stp     x28, x29, [x0, #({CONTEXT_X} + 28 * 8)]
    str     x30, [x0, #({CONTEXT_X} + 30 * 8)]
    ldp     x2, x3, [sp], #16
    stp     x2, x3, [x0, #{CONTEXT_X}]
    mrs     x2, sp_el0
    str     x2, [x0, #{CONTEXT_SP}]
    mrs     x2, elr_el2
    str     x2, [x0, #{CONTEXT_PC}]
    mrs     x2, spsr_el2
    str     x2, [x0, #{CONTEXT_SPSR}]
    mov     x0, x1
    mrs     x1, esr_el2
    mrs     x2, far_el2
    bl      handle_lower            // Rust: returns the context to resume
    // fall through

// Resumes the EL0 thread whose UserContext is at x0: records it as this
// core's current save area, resets the EL2 stack to its top (nothing on it
// survives a return to EL0), restores the registers and returns to EL0.
.global return_to_user
return_to_user:
    mrs     x1, tpidr_el2
    str     x0, [x1]
    ldr     x2, [x1, #8]            // core index
    adrp    x3, BOOT_STACKS
    add     x3, x3, :lo12:BOOT_STACKS
    add     x2, x2, #1
    mov     x4, #{STACK_SIZE}
    madd    x3, x2, x4, x3
    mov     sp, x3
    ldr     x2, [x0, #{CONTEXT_SP}]
    msr     sp_el0, x2
    ldr     x2, [x0, #{CONTEXT_PC}]
    msr     elr_el2, x2
    ldr     x2, [x0, #{CONTEXT_SPSR}]
    msr     spsr_el2, x2
    ldp     x2, x3, [x0, #({CONTEXT_X} + 2 * 8)]
    ldp     x4, x5, [x0, #({CONTEXT_X} + 4 * 8)]
    ldp     x6, x7, [x0, #({CONTEXT_X} + 6 * 8)]
    ldp     x8, x9, [x0, #({CONTEXT_X} + 8 * 8)]
    ldp     x10, x11, [x0, #({CONTEXT_X} + 10 * 8)]
    ldp     x12, x13, [x0, #({CONTEXT_X} + 12 * 8)]
    ldp     x14, x15, [x0, #({CONTEXT_X} + 14 * 8)]
    ldp     x16, x17, [x0, #({CONTEXT_X} + 16 * 8)]
    ldp     x18, x19, [x0, #({CONTEXT_X} + 18 * 8)]
    ldp     x20, x21, [x0, #({CONTEXT_X} + 20 * 8)]
    ldp     x22, x23, [x0, #({CONTEXT_X} + 22 * 8)]
    ldp     x24, x25, [x0, #({CONTEXT_X} + 24 * 8)]
    ldp     x26, x27, [x0, #({CONTEXT_X} + 26 * 8)]
    ldp     x28, x29, [x0, #({CONTEXT_X} + 28 * 8)]
    ldr     x30, [x0, #({CONTEXT_X} + 30 * 8)]
    ldp     x0, x1, [x0, #{CONTEXT_X}]
    eret

exception_common:
    // x0 and x1 are saved; x1 holds the vector index.
    mrs     x2, elr_el2
    mrs     x3, spsr_el2
    stp     x30, x2, [sp, #{FRAME_X30}]
    mrs     x2, esr_el2
    stp     x3, x2, [sp, #{FRAME_SPSR}]
    mrs     x2, far_el2
    mrs     x3, hpfar_el2
    stp     x2, x3, [sp, #{FRAME_FAR}]
    mov     x0, sp
    bl      handle_exception
    // The handler may have changed ELR/SPSR in the frame (it never does
    // for now, but the restore path is the one a resumed guest will use).
    ldp     x30, x2, [sp, #{FRAME_X30}]
    msr     elr_el2, x2
    ldr     x3, [sp, #{FRAME_SPSR}]
    msr     spsr_el2, x3
    ldp     x0, x1, [sp, #(0 * 16)]
    ldp     x2, x3, [sp, #(1 * 16)]
    ldp     x4, x5, [sp, #(2 * 16)]
    ldp     x6, x7, [sp, #(3 * 16)]
    ldp     x8, x9, [sp, #(4 * 16)]
    ldp     x10, x11, [sp, #(5 * 16)]
    ldp     x12, x13, [sp, #(6 * 16)]
    ldp     x14, x15, [sp, #(7 * 16)]
    ldp     x16, x17, [sp, #(8 * 16)]
    ldp     x18, x19, [sp, #(9 * 16)]
    ldp     x20, x21, [sp, #(10 * 16)]
    ldp     x22, x23, [sp, #(11 * 16)]
    ldp     x24, x25, [sp, #(12 * 16)]
    ldp     x26, x27, [sp, #(13 * 16)]
    ldp     x28, x29, [sp, #(14 * 16)]
    add     sp, sp, #{FRAME_SIZE}
    eret
