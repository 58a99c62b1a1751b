// Implementation of c10d_shim.h. Built by build.rs with the `cc` crate against the libtorch
// that torch-sys links (C++17, _GLIBCXX_USE_CXX11_ABI=1, USE_C10D_GLOO; with the cargo
// feature `nccl` also TIW_SHIM_WITH_NCCL + USE_C10D_NCCL and the CUDA/NCCL headers).
//
// Every entry point runs its body inside `guard`, which turns any C++ exception into the
// thread's error string: nothing unwinds into Rust.
#include "c10d_shim.h"

#include <chrono>
#include <cstdlib>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#ifdef TIW_SHIM_WITH_NCCL
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

struct tiw_pg {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
  bool shut_down = false;
};

namespace {

thread_local std::string last_error;

template <class Body>
int guard(Body&& body) {
  last_error.clear();
  try {
    body();
    return 0;
  } catch (const c10::Error& e) {
    // what() would append a C++ stack trace; the message alone is what users need.
    last_error = e.what_without_backtrace();
  } catch (const std::exception& e) {
    last_error = e.what();
  } catch (...) {
    last_error = "unknown C++ exception";
  }
  if (last_error.empty()) last_error = "unspecified c10d error";
  return -1;
}

std::vector<at::Tensor> tensors_of(tiw_tensor* const* ts, size_t n) {
  std::vector<at::Tensor> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    TORCH_CHECK(ts[i] != nullptr && ts[i]->defined(), "tensor ", i, " is undefined");
    TORCH_CHECK(ts[i]->is_contiguous(), "tensor ", i, " is not contiguous");
    out.push_back(*ts[i]);  // a new handle on the same storage: results land in place
  }
  return out;
}

// Waits for every started collective, even after a failure (each wait is bounded by the
// backend's timeout), then rethrows the first failure.
void wait_all(std::vector<c10::intrusive_ptr<c10d::Work>>& works) {
  std::exception_ptr first;
  for (auto& w : works) {
    try {
      w->wait();
    } catch (...) {
      if (!first) first = std::current_exception();
    }
  }
  if (first) std::rethrow_exception(first);
}

bool is_loopback(const std::string& addr) {
  return addr == "localhost" || addr.rfind("127.", 0) == 0 || addr == "::1" ||
         addr == "[::1]";
}

c10::intrusive_ptr<c10d::Backend> make_gloo(const c10::intrusive_ptr<c10d::Store>& store,
                                             const std::string& addr, int rank, int world,
                                             std::chrono::milliseconds timeout) {
  auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
  const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
  if (ifname != nullptr && *ifname != '\0') {
    opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
  } else if (is_loopback(addr)) {
    // Single-machine run: keep all traffic on the loopback interface instead of whatever
    // address this machine's hostname resolves to.
    opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(
        addr == "[::1]" ? std::string("::1") : addr));
  } else {
    opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
  }
  return c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world, opts);
}

#ifdef TIW_SHIM_WITH_NCCL
c10::intrusive_ptr<c10d::Backend> make_nccl(const c10::intrusive_ptr<c10d::Store>& store,
                                             int rank, int world, int device_index,
                                             std::chrono::milliseconds timeout) {
  TORCH_CHECK(device_index >= 0, "NCCL needs a CUDA device");
  // Blocking wait: a timed-out collective throws from wait() (an error for the caller)
  // instead of the watchdog thread terminating the process. Read when the group is built.
  setenv("TORCH_NCCL_BLOCKING_WAIT", "1", /*overwrite=*/0);
  const auto index = static_cast<c10::DeviceIndex>(device_index);
  c10::cuda::set_device(index);
  auto opts = c10d::ProcessGroupNCCL::Options::create();
  opts->timeout = timeout;
  auto pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, world, opts);
  const at::Device device(at::kCUDA, index);
  pg->setBoundDeviceId(device);
  pg->eagerConnectSingleDevice(device);
  return pg;
}
#endif

}  // namespace

extern "C" {

const char* tiw_c10d_last_error(void) { return last_error.c_str(); }

int tiw_c10d_has_nccl(void) {
#ifdef TIW_SHIM_WITH_NCCL
  return 1;
#else
  return 0;
#endif
}

tiw_pg* tiw_c10d_connect(int backend, const char* master_addr, uint16_t master_port, int rank,
                         int world_size, int host_store, int device_index, int64_t timeout_ms) {
  tiw_pg* out = nullptr;
  guard([&] {
    TORCH_CHECK(master_addr != nullptr && *master_addr != '\0', "empty master address");
    TORCH_CHECK(world_size >= 1 && rank >= 0 && rank < world_size, "rank ", rank,
                " is outside world size ", world_size);
    TORCH_CHECK(timeout_ms > 0, "the timeout must be positive");
    const std::string addr(master_addr);
    const std::chrono::milliseconds timeout(timeout_ms);

    c10d::TCPStoreOptions so;
    so.port = master_port;
    so.isServer = rank == 0 && host_store != 0;
    so.numWorkers = static_cast<size_t>(world_size);
    so.waitWorkers = true;
    so.timeout = timeout;
    auto tcp = c10::make_intrusive<c10d::TCPStore>(addr, so);
    // Keys of this group live under a prefix, so another group could share the store.
    c10::intrusive_ptr<c10d::Store> store = c10::make_intrusive<c10d::PrefixStore>("tiw/0/", tcp);

    c10::intrusive_ptr<c10d::Backend> be;
    if (backend == TIW_C10D_GLOO) {
      be = make_gloo(store, addr, rank, world_size, timeout);
    } else if (backend == TIW_C10D_NCCL) {
#ifdef TIW_SHIM_WITH_NCCL
      be = make_nccl(store, rank, world_size, device_index, timeout);
#else
      TORCH_CHECK(false, "this build has no NCCL support: rebuild with --features nccl");
#endif
    } else {
      TORCH_CHECK(false, "unknown backend code ", backend);
    }
    out = new tiw_pg{store, be};
  });
  return out;
}

int tiw_c10d_shutdown(tiw_pg* pg) {
  return guard([&] {
    TORCH_CHECK(pg != nullptr, "null process group");
    if (pg->shut_down) return;
    pg->shut_down = true;
    pg->backend->shutdown();
  });
}

void tiw_c10d_free(tiw_pg* pg) {
  if (pg == nullptr) return;
  tiw_c10d_shutdown(pg);
  // Gloo's destructor joins its worker threads; the store (rank 0: the server) goes last.
  guard([&] { pg->backend.reset(); });
  guard([&] { pg->store.reset(); });
  delete pg;
}

int tiw_c10d_all_reduce_sum(tiw_pg* pg, tiw_tensor* const* tensors, size_t n) {
  return guard([&] {
    TORCH_CHECK(pg != nullptr && !pg->shut_down, "process group is shut down");
    auto ts = tensors_of(tensors, n);
    c10d::AllreduceOptions o;
    o.reduceOp = c10d::ReduceOp::SUM;
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
    works.reserve(ts.size());
    for (auto& t : ts) {
      // c10d reads a vector argument as one tensor per local device: one call per tensor.
      std::vector<at::Tensor> one{t};
      works.push_back(pg->backend->allreduce(one, o));
    }
    wait_all(works);
  });
}

int tiw_c10d_broadcast(tiw_pg* pg, tiw_tensor* const* tensors, size_t n, int root) {
  return guard([&] {
    TORCH_CHECK(pg != nullptr && !pg->shut_down, "process group is shut down");
    auto ts = tensors_of(tensors, n);
    c10d::BroadcastOptions o;
    o.rootRank = root;
    o.rootTensor = 0;
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
    works.reserve(ts.size());
    for (auto& t : ts) {
      std::vector<at::Tensor> one{t};
      works.push_back(pg->backend->broadcast(one, o));
    }
    wait_all(works);
  });
}

int tiw_c10d_barrier(tiw_pg* pg) {
  return guard([&] {
    TORCH_CHECK(pg != nullptr && !pg->shut_down, "process group is shut down");
    pg->backend->barrier(c10d::BarrierOptions())->wait();
  });
}

int tiw_set_grad(tiw_tensor* param, tiw_tensor* grad) {
  return guard([&] {
    TORCH_CHECK(param != nullptr && grad != nullptr, "null tensor");
    TORCH_CHECK(param->sizes() == grad->sizes() && param->dtype() == grad->dtype() &&
                    param->device() == grad->device(),
                "the gradient must match the parameter's shape, dtype and device");
    param->mutable_grad() = *grad;
  });
}

}  // extern "C"
