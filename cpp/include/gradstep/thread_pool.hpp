// A persistent pool of worker threads that run the tasks of one job at a time.
//
// Why persistent: a full-batch fit computes one gradient per iteration, thousands of times; creating
// threads for each of them would cost more than a small gradient. The workers are started on first
// use and then sleep on a condition variable between jobs.
//
// Why they spin first: waking a sleeping thread (a futex wake, in a VM an interrupt to a halted
// virtual CPU) takes tens to hundreds of microseconds, as long as a small gradient, and a fit asks
// for the next job after only its own driver's work (~0.1-0.2 ms of Python per L-BFGS round). So a
// worker that finishes a job watches for the next one for kSpin before it sleeps, and the caller
// watches for its helpers' last task for kSpin before it sleeps, as OpenMP runtimes and OpenBLAS
// do (for longer: OpenBLAS's threads spin ~0.1 s). Idle, a worker costs nothing after kSpin.
//
// Why no lock between busy threads: a job is published with atomic stores (its ticket last), a
// spinning worker picks it up with atomic loads, and the last helper signals the end with an
// atomic decrement; the mutex is taken only to sleep and to wake a sleeper (counted in sleepers_
// and caller_waiting_). When the caller published a job under the mutex, a spinning worker that
// saw it at once collided with the caller on that mutex and went to sleep in the kernel, and the
// caller and the last helper collided again at the end: back-to-back mini-batch steps of ~20 us
// paid a futex wake-up often enough to lose the second thread's gain.
//
// Why results never depend on the number of threads: a job is a list of independent tasks, each
// writing only its own output slot; which thread runs which task changes nothing in the numbers.
// The caller of parallel_for is one of the participants, so n_participants == 1 runs every task on
// the calling thread with no synchronisation at all.
//
// Robustness:
// - A second job submitted while one is in flight (two Python threads calling the core with the GIL
//   released, or a nested call) does not wait for the pool: it runs on its own calling thread.
// - fork(): the child has none of the parent's worker threads and only the forking thread, so
//   every lock another thread held at that moment stays locked in the child for ever. The child
//   therefore never touches the parent's pool (abandoned, its locks included) and starts a fresh
//   one on first use. The one lock it must take to get there, the lock of instance(), is made
//   fork-safe with pthread_atfork handlers (install_fork_handlers, called when the Python module
//   is loaded): before fork() the forking thread takes it (waiting the few instructions a
//   thread inside instance() needs to finish), after fork() parent and child release it, and
//   the child forgets the parent's pool. instance() also compares the process id, for a fork
//   that bypasses the handlers (a raw clone/vfork system call).
// - The pool is leaked on purpose: joining threads from a static destructor while the interpreter
//   shuts down can deadlock; the OS reclaims the sleeping workers at exit.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <mutex>
#include <system_error>
#include <thread>
#include <type_traits>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#include <unistd.h>
#define GRADSTEP_HAVE_GETPID 1
#define GRADSTEP_HAVE_FORK 1
#endif

namespace gradstep {

class ThreadPool {
 public:
  // The process-wide pool with one participant per hardware thread (the caller included).
  static ThreadPool& instance() {
    install_fork_handlers();
    std::lock_guard<std::mutex> lock(instance_lock_);
    if (pool_ == nullptr || pool_->owner_pid_ != current_pid()) {
      pool_ = new ThreadPool(hardware_threads());  // a pool inherited through fork() is abandoned
    }
    return *pool_;
  }

  // Registers the fork handlers of instance()'s lock, once per process (see the top of the file).
  // The Python module calls it when it is loaded, before any thread can be inside instance();
  // instance() calls it too, for C++ users.
  static void install_fork_handlers() {
#ifdef GRADSTEP_HAVE_FORK
    static std::atomic<bool> installed{false};  // constant-initialized: no guard variable
    if (!installed.exchange(true)) {
      ::pthread_atfork(&lock_before_fork, &unlock_after_fork, &reset_after_fork_in_child);
    }
#endif
  }

  // For tests: holds instance()'s lock for `seconds`, as a thread inside instance() does for a
  // moment, so that a test can fork while it is held.
  static void hold_instance_lock_for(double seconds) {
    std::lock_guard<std::mutex> lock(instance_lock_);
    std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  }

  static int hardware_threads() {
    const unsigned hw = std::thread::hardware_concurrency();
    return hw == 0 ? 1 : static_cast<int>(hw);
  }

  // Participants available to one job: the workers plus the calling thread.
  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // Runs fn(task) for every task in [0, n_tasks), on at most n_participants threads (the calling
  // thread included), and returns when all of them are done. The first exception thrown by a task
  // is rethrown here once every participant has stopped.
  template <class F>
  void parallel_for(std::ptrdiff_t n_tasks, int n_participants, F&& fn) {
    if (n_tasks <= 0) return;
    const int helpers =
        std::min({n_participants - 1, static_cast<int>(workers_.size()),
                  static_cast<int>(std::min<std::ptrdiff_t>(n_tasks - 1, 1 << 20))});
    std::unique_lock<std::mutex> busy(submit_, std::try_to_lock);
    if (helpers <= 0 || !busy.owns_lock()) {
      for (std::ptrdiff_t task = 0; task < n_tasks; ++task) fn(task);
      return;
    }
    Job job;
    job.n_tasks = n_tasks;
    using Fn = std::remove_reference_t<F>;
    job.call = [](void* ctx, std::ptrdiff_t task) { (*static_cast<Fn*>(ctx))(task); };
    job.ctx = const_cast<void*>(static_cast<const void*>(&fn));
    // Published without a lock: a spinning worker that sees the new ticket finds the job and the
    // pending count written before it (release). Sleeping workers are woken under the mutex.
    job_.store(&job, std::memory_order_relaxed);
    pending_.store(helpers, std::memory_order_relaxed);
    generation_ += 1;
    ticket_.store(make_ticket(generation_, helpers), std::memory_order_seq_cst);
    if (sleepers_.load(std::memory_order_seq_cst) > 0) {
      std::lock_guard<std::mutex> lock(mutex_);  // a sleeper is in wait() or has not checked yet
      wake_.notify_all();
    }
    work(job);
    spin_until([this] { return pending_.load(std::memory_order_acquire) == 0; });
    if (pending_.load(std::memory_order_acquire) != 0) {
      std::unique_lock<std::mutex> lock(mutex_);
      caller_waiting_.store(true, std::memory_order_seq_cst);
      done_.wait(lock, [this] { return pending_.load(std::memory_order_seq_cst) == 0; });
      caller_waiting_.store(false, std::memory_order_relaxed);
    }
    if (job.error) std::rethrow_exception(job.error);
  }

  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

 private:
  struct Job {
    std::ptrdiff_t n_tasks = 0;
    void (*call)(void*, std::ptrdiff_t) = nullptr;
    void* ctx = nullptr;
    std::atomic<std::ptrdiff_t> next{0};
    std::atomic<bool> failed{false};
    std::exception_ptr error;  // written once, by the participant that set `failed`
  };

  explicit ThreadPool(int n_participants) : owner_pid_(current_pid()) {
    const int n_workers = std::max(0, n_participants - 1);
    workers_.reserve(static_cast<std::size_t>(n_workers));
    for (int i = 0; i < n_workers; ++i) {
      try {
        workers_.emplace_back([this, i] { worker_loop(i); });
      } catch (const std::system_error&) {
        break;  // the system refuses more threads: run with the ones we have
      }
    }
  }

  // pthread_atfork handlers: the forking thread takes the lock before fork() and releases it after,
  // in the parent and in the child (POSIX lets the thread that locked a mutex unlock it in the
  // child); the child also forgets the parent's pool, whose workers do not exist there.
  static void lock_before_fork() { instance_lock_.lock(); }
  static void unlock_after_fork() { instance_lock_.unlock(); }
  static void reset_after_fork_in_child() {
    pool_ = nullptr;  // the parent's pool is leaked: its locks may be held by threads that are gone
    instance_lock_.unlock();
  }

  static long current_pid() {
#ifdef GRADSTEP_HAVE_GETPID
    return static_cast<long>(::getpid());
#else
    return 0;
#endif
  }

  // Tasks are claimed one at a time from a shared counter: the fastest thread takes more of them.
  static void work(Job& job) {
    for (;;) {
      const std::ptrdiff_t task = job.next.fetch_add(1, std::memory_order_relaxed);
      if (task >= job.n_tasks || job.failed.load(std::memory_order_relaxed)) return;
      try {
        job.call(job.ctx, task);
      } catch (...) {
        if (!job.failed.exchange(true)) job.error = std::current_exception();
        return;
      }
    }
  }

  // A worker takes part in a job when its index is below the job's helper count. Between jobs it
  // spins on the ticket, then sleeps on wake_ (counted in sleepers_, so that the caller takes the
  // mutex and notifies only when someone sleeps). The caller of a job cannot publish the next
  // one before every helper of this one has finished (pending_), so a helper always finds its
  // own job in job_; a worker that is not a helper may skip tickets, which is harmless.
  void worker_loop(int index) {
    std::uint64_t seen = 0;  // the generation of the last ticket this worker looked at
    auto fresh = [&] { return ticket_generation(ticket_.load(std::memory_order_seq_cst)) != seen; };
    for (;;) {
      spin_until(fresh);
      if (!fresh()) {
        std::unique_lock<std::mutex> lock(mutex_);
        sleepers_.fetch_add(1, std::memory_order_seq_cst);
        wake_.wait(lock, fresh);
        sleepers_.fetch_sub(1, std::memory_order_seq_cst);
      }
      const std::uint64_t ticket = ticket_.load(std::memory_order_acquire);
      seen = ticket_generation(ticket);
      if (index >= ticket_helpers(ticket)) continue;  // this job asked for fewer threads
      work(*job_.load(std::memory_order_relaxed));
      // The last helper notifies only a caller that went to sleep; it takes the mutex so that the
      // caller cannot miss it between its predicate check and its wait.
      if (pending_.fetch_sub(1, std::memory_order_seq_cst) == 1 &&
          caller_waiting_.load(std::memory_order_seq_cst)) {
        std::lock_guard<std::mutex> lock(mutex_);
        done_.notify_one();
      }
    }
  }
  // A job's ticket: its generation (a counter of jobs) and, in the low kHelperBits, its number of
  // helpers, published in one atomic store so that a worker never pairs one job's generation
  // with another's helper count.
  static constexpr int kHelperBits = 24;
  static std::uint64_t make_ticket(std::uint64_t generation, int helpers) {
    return (generation << kHelperBits) | static_cast<std::uint64_t>(helpers);
  }
  static std::uint64_t ticket_generation(std::uint64_t ticket) { return ticket >> kHelperBits; }
  static int ticket_helpers(std::uint64_t ticket) {
    return static_cast<int>(ticket & ((std::uint64_t{1} << kHelperBits) - 1));
  }
  // How long a thread watches for the event it waits for before it sleeps (see the top).
  static constexpr std::chrono::microseconds kSpin{300};

  // Polls ready() until it is true or kSpin has passed; the caller then waits on its condition
  // variable, which returns at once when ready() became true meanwhile.
  template <class Ready>
  static void spin_until(Ready ready) {
    if (ready()) return;
    const auto until = std::chrono::steady_clock::now() + kSpin;
    for (;;) {
      for (int i = 0; i < 64; ++i) {
        if (ready()) return;
        cpu_relax();
      }
      if (std::chrono::steady_clock::now() >= until) return;
    }
  }

  // A spin-wait hint (x86 `pause`): the polling thread yields the core's resources to its sibling
  // hyperthread and leaves the loop without a memory-order mis-speculation.
  static void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
  }

  // The process-wide pool and the lock of instance() (inline variables, constant-initialized).
  static inline std::mutex instance_lock_;
  static inline ThreadPool* pool_ = nullptr;

  long owner_pid_;
  std::vector<std::thread> workers_;  // never joined: see the note on leaking at the top
  std::mutex submit_;                 // held by the caller of the job in flight
  std::mutex mutex_;                  // taken only to sleep and to wake a sleeper
  std::condition_variable wake_;      // a sleeping worker waits here for a fresh ticket
  std::condition_variable done_;      // a sleeping caller waits here for pending_ == 0
  std::uint64_t generation_ = 0;      // written by the caller holding submit_ only
  std::atomic<std::uint64_t> ticket_{0};
  std::atomic<Job*> job_{nullptr};
  std::atomic<int> pending_{0};          // helpers still working on the current job
  std::atomic<int> sleepers_{0};         // workers inside wake_.wait (or about to be)
  std::atomic<bool> caller_waiting_{false};  // the caller is inside done_.wait (or about to be)
};

// fn(task) for every task in [0, n_tasks): on the pool when one is given, else on the calling
// thread. The engines pass no pool for work below their parallel threshold, so such a call never
// starts the pool's workers.
template <class F>
void run_tasks(ThreadPool* pool, std::ptrdiff_t n_tasks, int n_participants, F&& fn) {
  if (pool) {
    pool->parallel_for(n_tasks, n_participants, fn);
    return;
  }
  for (std::ptrdiff_t task = 0; task < n_tasks; ++task) fn(task);
}

}  // namespace gradstep
