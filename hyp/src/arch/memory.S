// memcpy and memset for the kernel, replacing compiler-builtins' generic
// versions (which copy a word per loop iteration and call out for every
// struct copy above 32 bytes: a third of a system call's instructions).
//
// Both follow the C contract (x0 = destination, returned; x1 = source or
// fill byte; x2 = length; the ranges of memcpy do not overlap). They touch
// only x0-x5 and the flags, which AAPCS64 lets a callee clobber. With the
// MMU off all memory is Device memory, where unaligned accesses fault, so
// the fast path runs only when both addresses are 8-byte aligned; anything
// else is copied a byte at a time.

.section .text.memory, "ax"
.global memcpy
.type memcpy, %function
memcpy:
    mov     x3, x0
    orr     x4, x0, x1
    tst     x4, #7
    b.ne    3f                      // unaligned: bytes
    // 32 bytes per iteration (the kernel's copies are messages and
    // register files of 64 to 256 bytes), then 16, 8 and single bytes.
1:  subs    x2, x2, #32
    b.lo    2f
    ldp     x4, x5, [x1]
    stp     x4, x5, [x3]
    ldp     x4, x5, [x1, #16]
    stp     x4, x5, [x3, #16]
    add     x1, x1, #32
    add     x3, x3, #32
    b       1b
2:  tbz     x2, #4, 6f              // x2 + 32 is what is left: 0 to 31
    ldp     x4, x5, [x1], #16
    stp     x4, x5, [x3], #16
6:  tbz     x2, #3, 7f
    ldr     x4, [x1], #8
    str     x4, [x3], #8
7:  ands    x2, x2, #7
    b.eq    5f
4:  ldrb    w4, [x1], #1
    strb    w4, [x3], #1
    subs    x2, x2, #1
    b.ne    4b
5:  ret
3:  cbz     x2, 5b                  // unaligned: a byte at a time
    b       4b
.size memcpy, . - memcpy

.global memset
.type memset, %function
memset:
    mov     x3, x0
    and     x1, x1, #0xff
    mov     x5, #0x0101010101010101
    mul     x4, x1, x5              // the byte in all eight lanes
    tst     x0, #7
    b.ne    3f                      // unaligned: bytes
1:  subs    x2, x2, #16
    b.lo    2f
    stp     x4, x4, [x3], #16
    b       1b
2:  add     x2, x2, #16             // 0 to 15 bytes left
    tbz     x2, #3, 3f
    str     x4, [x3], #8
    sub     x2, x2, #8
3:  cbz     x2, 5f
4:  strb    w1, [x3], #1
    subs    x2, x2, #1
    b.ne    4b
5:  ret
.size memset, . - memset
