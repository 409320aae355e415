/* Context switch for aarch64, AAPCS64 (ELF and Mach-O).
 *
 *   void *kio_ctx_switch(void **save_sp, void *load_sp, void *msg);
 *
 * Saves what the ABI obliges a callee to preserve (x19-x28, fp, lr, the low
 * halves d8-d15 and FPCR) on the current stack, stores the stack pointer in
 * *save_sp, switches to load_sp, restores the same set and returns msg.
 * x18 is the platform register on Apple and some BSDs: never touched.
 *
 * Saved block, 176 bytes (lib/context.h builds the first one for a fiber):
 *   [sp+0]  x19 x20  [sp+16] x21 x22  [sp+32] x23 x24  [sp+48] x25 x26
 *   [sp+64] x27 x28  [sp+80] x29 x30  [sp+96] d8 d9    [sp+112] d10 d11
 *   [sp+128] d12 d13 [sp+144] d14 d15 [sp+160] fpcr, padding
 */
#include "asm.h"

KIO_FUNC_BEGIN(kio_ctx_switch)
    .cfi_startproc
    sub sp, sp, #176
    .cfi_def_cfa_offset 176
    stp x19, x20, [sp, #0]
    stp x21, x22, [sp, #16]
    stp x23, x24, [sp, #32]
    stp x25, x26, [sp, #48]
    stp x27, x28, [sp, #64]
    stp x29, x30, [sp, #80]
    .cfi_offset x19, -176
    .cfi_offset x20, -168
    .cfi_offset x21, -160
    .cfi_offset x22, -152
    .cfi_offset x23, -144
    .cfi_offset x24, -136
    .cfi_offset x25, -128
    .cfi_offset x26, -120
    .cfi_offset x27, -112
    .cfi_offset x28, -104
    .cfi_offset x29, -96
    .cfi_offset x30, -88
    stp d8, d9, [sp, #96]
    stp d10, d11, [sp, #112]
    stp d12, d13, [sp, #128]
    stp d14, d15, [sp, #144]
    mrs x9, fpcr
    str x9, [sp, #160]

    mov x10, x30  /* where the leaving context will return */
    mov x9, sp
    str x9, [x0]
    mov sp, x1
2:  /* kio_ctx_resume joins here */

    ldr x9, [sp, #160]
    msr fpcr, x9
    ldp d8, d9, [sp, #96]
    ldp d10, d11, [sp, #112]
    ldp d12, d13, [sp, #128]
    ldp d14, d15, [sp, #144]
    ldp x19, x20, [sp, #0]
    ldp x21, x22, [sp, #16]
    ldp x23, x24, [sp, #32]
    ldp x25, x26, [sp, #48]
    ldp x27, x28, [sp, #64]
    ldp x29, x30, [sp, #80]
    add sp, sp, #176
    .cfi_def_cfa_offset 0
    .cfi_restore x19
    .cfi_restore x20
    .cfi_restore x21
    .cfi_restore x22
    .cfi_restore x23
    .cfi_restore x24
    .cfi_restore x25
    .cfi_restore x26
    .cfi_restore x27
    .cfi_restore x28
    .cfi_restore x29
    .cfi_restore x30
    mov x0, x2
    /* `ret` when the arriving context suspended at the same call site as
     * the leaving one (its prediction, the leaving context's return address,
     * is then right, and the return-stack predictor stays in step with the
     * calls); otherwise an indirect branch, which the branch target predictor
     * learns from history. See the x86_64 switch for the numbers. */
    cmp x10, x30
    b.ne 1f
    ret
1:
    br x30
    .cfi_endproc
KIO_FUNC_END(kio_ctx_switch)

/* First code of every fiber: the initial block holds x19 = argument and
 * x20 = entry function; kio_ctx_switch "returns" here with the message in x0.
 * Calls entry(msg, arg), which never returns. The link register is marked
 * undefined so unwinders stop at the fiber's root. */
KIO_FUNC_BEGIN(kio_ctx_entry)
    .cfi_startproc
    .cfi_undefined x30
    mov x1, x19
    mov x29, #0
    /* As if called from here, without a `blr`, which would push the
     * return-stack predictor (see the x86_64 switch). */
    adr x30, 1f
    br x20
1:
    brk #0
    .cfi_endproc
KIO_FUNC_END(kio_ctx_entry)

/* The last switch of a context that is never resumed (see the x86_64 switch):
 *
 *   void kio_ctx_resume(void *load_sp, void *msg);
 */
KIO_FUNC_BEGIN(kio_ctx_resume)
    .cfi_startproc
    .cfi_undefined x30
    mov sp, x0
    mov x2, x1
    ldr x10, [sp, #88]  /* the arriving context's own return address: kio_ctx_switch ends in `ret` */
    b 2b
    .cfi_endproc
KIO_FUNC_END(kio_ctx_resume)

/* Starts a fresh fiber on the stack of the context that calls it, which is
 * abandoned (a dying fiber handing its stack to the next task):
 *
 *   void kio_ctx_restart(void *stack_top, entry, void *arg, void *msg);
 *
 * Equivalent to switching to make_context(stack_top, entry, arg) with msg,
 * minus saving anything and minus writing the first block: sp goes straight
 * to the aligned top, where kio_ctx_entry expects it. FPCR stays as it is
 * (make_context would copy the current one). Never returns. */
KIO_FUNC_BEGIN(kio_ctx_restart)
    .cfi_startproc
    .cfi_undefined x30
    and x0, x0, #~15
    mov sp, x0
    mov x19, x2
    mov x20, x1
    mov x0, x3
    b KIO_SYM(kio_ctx_entry)
    .cfi_endproc
KIO_FUNC_END(kio_ctx_restart)

#if defined(__ELF__)
.section .note.GNU-stack, "", %progbits
#endif
