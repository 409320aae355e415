/* Context switch for x86_64, System V ABI (ELF and Mach-O).
 *
 *   void *kio_ctx_switch(void **save_sp, void *load_sp, void *msg);
 *
 * Saves what the ABI obliges a callee to preserve (rbx, rbp, r12-r15, MXCSR
 * (control bits, and with them the status flags, so each context keeps its
 * own) and the x87 control word) on the current stack, stores
 * the stack pointer in *save_sp, switches to load_sp, restores the same set
 * from there and returns msg to whoever suspended on that stack. Because the
 * saved block has one layout on every stack, the CFI below stays true after
 * the stack pointer changes, so debuggers can unwind through a switch.
 *
 * Saved block (lib/context.h builds the first one for a new fiber):
 *   [sp+0]  mxcsr (4 bytes), x87 control word (2 bytes), padding
 *   [sp+8]  r15   [sp+16] r14   [sp+24] r13   [sp+32] r12
 *   [sp+40] rbx   [sp+48] rbp   [sp+56] return address
 */
#include "asm.h"

KIO_FUNC_BEGIN(kio_ctx_switch)
    .cfi_startproc
    pushq %rbp
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset rbp, 0
    pushq %rbx
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset rbx, 0
    pushq %r12
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset r12, 0
    pushq %r13
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset r13, 0
    pushq %r14
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset r14, 0
    pushq %r15
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset r15, 0
    subq $8, %rsp
    .cfi_adjust_cfa_offset 8
    stmxcsr (%rsp)
    fnstcw 4(%rsp)

    movq 56(%rsp), %r8  /* where the leaving context will return */
    movq %rsp, (%rdi)
    movq %rsi, %rsp
2:  /* kio_ctx_resume joins here */

    /* The arriving context's block has the same layout, so the CFI above
     * stays true until the block is dropped. The return address is loaded
     * first, so the jump at the end need not wait for it.
     *
     * How to get there: the `call` that entered here pushed the leaving
     * context's return address on the return-stack predictor, and a `ret`
     * pops it as its prediction. When the arriving context suspended at the
     * same call site (two fibers yielding to each other, or parking in the
     * same wait), that prediction is right, and `ret` keeps the predictor's
     * stack in step with the calls, so the returns that follow up the
     * arriving context's frames are predicted too. Otherwise (a fiber that
     * parks switching to a fresh one, a dying one to its awaiter) the
     * prediction is wrong, and an indirect jump, which the branch target
     * predictor learns from history, does better (Boost.Context always
     * ends that way). Yield between two fibers: 15.8 -> 8.8 ns with `ret`
     * there; spawn+await: 80 -> 84 ns with `ret` everywhere. */
    movq 56(%rsp), %rcx
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    movq 8(%rsp), %r15
    movq 16(%rsp), %r14
    movq 24(%rsp), %r13
    movq 32(%rsp), %r12
    movq 40(%rsp), %rbx
    movq 48(%rsp), %rbp
    movq %rdx, %rax
    cmpq %rcx, %r8
    jne 1f
    .cfi_remember_state
    leaq 56(%rsp), %rsp
    .cfi_def_cfa_offset 8
    .cfi_restore r15
    .cfi_restore r14
    .cfi_restore r13
    .cfi_restore r12
    .cfi_restore rbx
    .cfi_restore rbp
    ret
1:
    .cfi_restore_state
    leaq 64(%rsp), %rsp
    .cfi_def_cfa_offset 0
    .cfi_restore r15
    .cfi_restore r14
    .cfi_restore r13
    .cfi_restore r12
    .cfi_restore rbx
    .cfi_restore rbp
    .cfi_register rip, rcx
    jmpq *%rcx
    .cfi_endproc
KIO_FUNC_END(kio_ctx_switch)

/* First code of every fiber: the initial block (see lib/context.h) holds
 * r12 = argument and r13 = entry function, and kio_ctx_switch "returns" here
 * with the message in rax. Runs entry(msg, arg), which never returns. The
 * return address is marked undefined so unwinders stop at the fiber's root.
 *
 * entry is entered as if called from here (its return address is the ud2
 * below, inside this function's CFI), but with a jump: a `call` would push
 * an entry on the return-stack predictor that no `ret` ever pops, and the
 * context this fiber switches back to when it ends would find its returns
 * predicted one entry off (see kio_ctx_resume). */
KIO_FUNC_BEGIN(kio_ctx_entry)
    .cfi_startproc
    .cfi_undefined rip
    movq %rax, %rdi
    movq %r12, %rsi
    xorl %ebp, %ebp
    leaq 1f(%rip), %rcx
    pushq %rcx
    jmpq *%r13
1:
    ud2
    .cfi_endproc
KIO_FUNC_END(kio_ctx_entry)

/* The last switch of a context that is never resumed (a fiber that ended):
 *
 *   void kio_ctx_resume(void *load_sp, void *msg);
 *
 * Restores the context saved at load_sp and returns msg to it, saving
 * nothing (it joins kio_ctx_switch's restore, taking its `ret` exit).
 * Reached by jumps only (kio_ctx_entry's, then tail calls), so the
 * ending fiber leaves nothing on the return-stack predictor, and it ends
 * with `ret`: the predictor's top entry is then the one pushed by the
 * context that started the fiber, and when that is the context resumed here
 * (an awaiter that parked and switched to the child it spawned), the
 * prediction is right and its returns stay in step. */
KIO_FUNC_BEGIN(kio_ctx_resume)
    .cfi_startproc
    .cfi_undefined rip
    movq %rdi, %rsp
    movq %rsi, %rdx
    movq 56(%rsp), %r8  /* the arriving context's own return address: kio_ctx_switch ends in `ret` */
    jmp 2b
    .cfi_endproc
KIO_FUNC_END(kio_ctx_resume)

/* Starts a fresh fiber on the stack of the context that calls it, which is
 * abandoned (a dying fiber handing its stack to the next task):
 *
 *   void kio_ctx_restart(void *stack_top, entry, void *arg, void *msg);
 *
 * Equivalent to switching to make_context(stack_top, entry, arg) with msg,
 * minus saving anything and minus writing the first block: rsp goes straight
 * to the aligned top, where kio_ctx_entry expects it. MXCSR and the x87
 * control word stay as they are (make_context would copy the current ones).
 * Never returns. */
KIO_FUNC_BEGIN(kio_ctx_restart)
    .cfi_startproc
    .cfi_undefined rip
    andq $-16, %rdi
    movq %rdi, %rsp
    movq %rsi, %r13
    movq %rdx, %r12
    movq %rcx, %rax
    jmp KIO_SYM(kio_ctx_entry)
    .cfi_endproc
KIO_FUNC_END(kio_ctx_restart)

#if defined(__ELF__)
.section .note.GNU-stack, "", @progbits
#endif
