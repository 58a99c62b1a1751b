// C interface between tiw's Rust code (src/dist/) and libtorch's c10d: a TCPStore
// rendezvous and a ProcessGroupGloo or ProcessGroupNCCL backend.
//
// Tensors cross the boundary as `at::Tensor*`, which is what tch's `Tensor::as_ptr()`
// (torch-sys `C_tensor*`) points to. Functions returning int give 0 on success and -1 on
// failure; functions returning a pointer give NULL on failure. The failure's message is
// then available from tiw_c10d_last_error() on the same thread. No C++ exception ever
// leaves these functions.
#pragma once
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
namespace at {
class Tensor;
}
typedef at::Tensor tiw_tensor;
extern "C" {
#else
typedef struct tiw_tensor tiw_tensor;
#endif

typedef struct tiw_pg tiw_pg;

enum { TIW_C10D_GLOO = 0, TIW_C10D_NCCL = 1 };

// Message of this thread's last failure ("" if none); valid until its next shim call.
const char* tiw_c10d_last_error(void);

// 1 when this build contains ProcessGroupNCCL (cargo feature `nccl`), else 0.
int tiw_c10d_has_nccl(void);

// Rendezvous at master_addr:master_port and build the backend. The TCPStore server runs in
// rank 0 when `host_store` != 0 there; otherwise (torchrun's agent store) every rank is a
// client. `device_index` is the CUDA device of this rank (NCCL only; -1 otherwise).
// `timeout_ms` bounds the rendezvous and every later collective.
tiw_pg* tiw_c10d_connect(int backend, const char* master_addr, uint16_t master_port, int rank,
                         int world_size, int host_store, int device_index, int64_t timeout_ms);

// Shuts the backend down (NCCL: flushes and destroys its communicators). Idempotent.
int tiw_c10d_shutdown(tiw_pg* pg);

// Shuts down (errors ignored) and frees everything. NULL is allowed.
void tiw_c10d_free(tiw_pg* pg);

// In-place sum over ranks: one collective per tensor, all started before any is awaited.
// Every tensor must be contiguous. On failure every started collective has still been
// awaited (each one is bounded by the timeout), and the first error is reported.
int tiw_c10d_all_reduce_sum(tiw_pg* pg, tiw_tensor* const* tensors, size_t n);

// In-place broadcast from `root`, one collective per (contiguous) tensor, as above.
int tiw_c10d_broadcast(tiw_pg* pg, tiw_tensor* const* tensors, size_t n, int root);

// Waits until every rank has reached the barrier (bounded by the timeout).
int tiw_c10d_barrier(tiw_pg* pg);

// Makes `grad` (same shape, dtype and device) the `.grad` of `param`: gradients accumulated
// by autograd then land in `grad`'s storage (e.g. a view into one flat buffer).
int tiw_set_grad(tiw_tensor* param, tiw_tensor* grad);

#ifdef __cplusplus
}
#endif
