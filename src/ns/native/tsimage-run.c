/*
 * tsimage-run: the native half of src/ns (the build container runtime).
 *
 * Node cannot call clone(2)/unshare(2)/pivot_root(2)/mount(2)/capset(2) itself, so src/ns
 * compiles this file once (gcc, at `npm run build` or on first use) and runs it per RUN step.
 * One exec does everything in-process (no chain of unshare/mount/setpriv binaries), which is
 * what keeps `true` in a container at a few milliseconds.
 *
 * Process layout:
 *   outer (this process, host namespaces): joins nothing, clone()s the child with new
 *     mount/pid/uts/ipc(/net) namespaces, forwards SIGTERM/SIGINT/SIGHUP as SIGKILL to the
 *     child (PID 1 of its namespace, so the kernel kills the whole tree), waits, removes the
 *     mount-point stubs it had to create in the rootfs, and reports on --status-fd:
 *       "exit N" | "signal N" | "error MESSAGE"
 *   child (PID 1 in the new pid namespace): joins the cgroups, unshares the cgroup namespace,
 *     sets up mounts (rootfs bind, /proc, /dev, /sys, files, user mounts), pivot_root (or
 *     chroot), masks paths like runc, sets hostname, brings lo up, applies rlimits, switches
 *     user/groups, cuts capabilities, sets no_new_privs and execs the command as PID 1.
 *     Setup errors go back to the outer over a close-on-exec pipe.
 *
 * Every path inside the rootfs is resolved with openat2(RESOLVE_IN_ROOT), so symlinks in the
 * image can never send a mount (or a stub cleanup) outside the rootfs.
 *
 * Also: `tsimage-run --version` prints the protocol version.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/capability.h>
#include <linux/openat2.h>

#define PROTOCOL "tsimage-run 1"
#define MAX_ITEMS 256

struct mnt {
  const char *type, *src, *dst, *opts;
};
struct rlim {
  int res;
  rlim_t soft, hard;
};

static const char *rootfs, *hostname, *cwd = "/", *mode = "pivot";
static int newnet, status_fd = -1, no_new_privs, have_user;
static uid_t uid;
static gid_t gid;
static gid_t groups[MAX_ITEMS];
static int ngroups;
static uint64_t caps = (1ULL << CAP_CHOWN) | (1ULL << CAP_DAC_OVERRIDE) | (1ULL << CAP_FOWNER) | (1ULL << CAP_FSETID) |
                       (1ULL << CAP_KILL) | (1ULL << CAP_SETGID) | (1ULL << CAP_SETUID) | (1ULL << CAP_SETPCAP) |
                       (1ULL << CAP_NET_BIND_SERVICE) | (1ULL << CAP_NET_RAW) | (1ULL << CAP_SYS_CHROOT) |
                       (1ULL << CAP_MKNOD) | (1ULL << CAP_AUDIT_WRITE) | (1ULL << CAP_SETFCAP);
static char *envv[4096];
static int nenv;
static struct mnt mounts[MAX_ITEMS];
static int nmounts;
static struct rlim rlims[64];
static int nrlims;
static const char *cgroup_procs[64];
static int ncgroups;
static char **argv_cmd;
static int errpipe[2];
static int rootfd = -1;
static volatile pid_t child_pid;
static int no_proc, no_dev, no_sys;

/* ---- error reporting -------------------------------------------------------------- */

/* In the child: send "E<message>" to the outer and exit. */
static void die(const char *fmt, ...) {
  char buf[4096];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf + 1, sizeof buf - 2, fmt, ap);
  va_end(ap);
  if (n < 0) n = 0;
  if (n > (int)sizeof buf - 3) n = sizeof buf - 3;
  buf[0] = 'E';
  buf[n + 1] = '\n';
  if (write(errpipe[1], buf, n + 2) < 0) {
  }
  _exit(125);
}
#define DIE_ERRNO(what, arg) die("%s %s: %s", what, arg, strerror(errno))

static void report(const char *fmt, ...) {
  char buf[4200];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if (n > (int)sizeof buf - 2) n = sizeof buf - 2;
  buf[n++] = '\n';
  if (status_fd >= 0) {
    if (write(status_fd, buf, n) < 0) {
    }
  } else if (write(2, buf, n) < 0) {
  }
}

static void usage_fail(const char *msg, const char *arg) {
  report("error usage: %s%s%s", msg, arg ? " " : "", arg ? arg : "");
  exit(2);
}

/* ---- paths inside the rootfs ------------------------------------------------------ */

static int open_in_root(const char *path, int flags) {
  struct open_how how = {0};
  how.flags = flags | O_CLOEXEC;
  how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
  while (*path == '/') path++;
  if (!*path) path = ".";
  return (int)syscall(SYS_openat2, rootfd, path, &how, sizeof how);
}

/* Stub records sent to the outer: "D<path>" (dir created) or "F<path>" (file created). */
static void note_stub(char kind, const char *path) {
  char buf[PATH_MAX + 4];
  int n = snprintf(buf, sizeof buf, "%c%s\n", kind, path);
  if (n > 0 && write(errpipe[1], buf, n) < 0) {
  }
}

/* Make sure `path` (inside the root) exists as a dir (isdir) or file; returns an O_PATH fd. */
/* Copy path into parent (PATH_MAX bytes), drop trailing slashes and cut it at its last '/'.
   Returns the last name (inside parent's buffer); *has_dir says whether there was a '/'
   (then parent is the directory part, "" for "/name"). */
static const char *split_last(const char *path, char *parent, int *has_dir) {
  snprintf(parent, PATH_MAX, "%s", path);
  size_t len = strlen(parent);
  while (len > 1 && parent[len - 1] == '/') parent[--len] = 0;
  char *slash = strrchr(parent, '/');
  *has_dir = slash != NULL;
  if (!slash) return parent;
  *slash = 0;
  return slash + 1;
}

static int ensure_in_root_depth(const char *path, int isdir, int depth);
static int ensure_in_root(const char *path, int isdir) { return ensure_in_root_depth(path, isdir, 0); }

static int ensure_in_root_depth(const char *path, int isdir, int depth) {
  int fd = open_in_root(path, O_PATH);
  if (fd >= 0) return fd;
  if (errno != ENOENT) DIE_ERRNO("resolve", path);
  if (depth > 40) die("resolve %s: too many levels of symbolic links", path);
  {
    /* a dangling symlink (e.g. to an absolute path that only exists on the host): create its
       target inside the root, as the kernel would resolve it after pivot_root */
    char parent[PATH_MAX], target[PATH_MAX], next[PATH_MAX];
    int has_dir;
    const char *name = split_last(path, parent, &has_dir);
    int pfd = open_in_root(has_dir && parent[0] ? parent : "/", O_PATH | O_DIRECTORY);
    if (pfd >= 0) {
      ssize_t n = readlinkat(pfd, name, target, sizeof target - 1);
      close(pfd);
      if (n > 0) {
        target[n] = 0;
        if (target[0] == '/') snprintf(next, sizeof next, "%s", target);
        else snprintf(next, sizeof next, "%s/%s", has_dir && parent[0] ? parent : "", target);
        return ensure_in_root_depth(next, isdir, depth + 1);
      }
    }
  }
  char parent[PATH_MAX];
  snprintf(parent, sizeof parent, "%s", path);
  size_t len = strlen(parent);
  while (len > 1 && parent[len - 1] == '/') parent[--len] = 0;
  char *slash = strrchr(parent, '/');
  const char *name;
  int pfd;
  if (!slash || slash == parent) {
    name = slash ? slash + 1 : parent;
    pfd = open_in_root("/", O_PATH | O_DIRECTORY);
  } else {
    *slash = 0;
    name = slash + 1;
    int tmp = ensure_in_root_depth(parent, 1, depth + 1);
    close(tmp);
    pfd = open_in_root(parent, O_PATH | O_DIRECTORY);
  }
  if (pfd < 0) DIE_ERRNO("resolve", path);
  /* O_PATH fds can't be used with mkdirat etc. on all kernels: reopen as a real dir fd */
  char fdpath[64];
  snprintf(fdpath, sizeof fdpath, "/proc/self/fd/%d", pfd);
  int dfd = open(fdpath, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) DIE_ERRNO("open parent of", path);
  close(pfd);
  struct stat pst;
  fstat(dfd, &pst);
  if (isdir) {
    if (mkdirat(dfd, name, 0755) < 0 && errno != EEXIST) DIE_ERRNO("mkdir", path);
    note_stub('D', path);
  } else {
    int f = openat(dfd, name, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (f < 0 && errno != EEXIST) DIE_ERRNO("create", path);
    if (f >= 0) close(f);
    note_stub('F', path);
  }
  /* keep the parent's times as they were: the stub will be removed after the run */
  struct timespec ts[2] = {pst.st_atim, pst.st_mtim};
  futimens(dfd, ts);
  close(dfd);
  fd = open_in_root(path, O_PATH);
  if (fd < 0) DIE_ERRNO("resolve", path);
  return fd;
}

static const char *fdp(int fd) {
  static char buf[4][64];
  static int i;
  i = (i + 1) % 4;
  snprintf(buf[i], sizeof buf[i], "/proc/self/fd/%d", fd);
  return buf[i];
}

/* mount flags from a comma list; the rest goes to data */
static unsigned long parse_opts(const char *opts, char *data, size_t datalen, int *ro) {
  unsigned long fl = 0;
  char tmp[1024];
  snprintf(tmp, sizeof tmp, "%s", opts ? opts : "");
  data[0] = 0;
  *ro = 0;
  for (char *save = NULL, *o = strtok_r(tmp, ",", &save); o; o = strtok_r(NULL, ",", &save)) {
    if (!strcmp(o, "ro")) *ro = 1;
    else if (!strcmp(o, "rw")) *ro = 0;
    else if (!strcmp(o, "nosuid")) fl |= MS_NOSUID;
    else if (!strcmp(o, "nodev")) fl |= MS_NODEV;
    else if (!strcmp(o, "noexec")) fl |= MS_NOEXEC;
    else if (!strcmp(o, "rbind")) fl |= MS_BIND | MS_REC;
    else if (!strcmp(o, "bind")) fl |= MS_BIND;
    else if (!strcmp(o, "")) continue;
    else {
      size_t l = strlen(data);
      snprintf(data + l, datalen - l, "%s%s", l ? "," : "", o);
    }
  }
  return fl;
}

static void do_mount(const struct mnt *m) {
  char data[1024];
  int ro;
  unsigned long fl = parse_opts(m->opts, data, sizeof data, &ro);
  int isbind = !strcmp(m->type, "bind");
  int isdir = 1;
  if (isbind) {
    struct stat st;
    if (stat(m->src, &st) < 0) DIE_ERRNO("mount source", m->src);
    isdir = S_ISDIR(st.st_mode);
    if (!(fl & MS_BIND)) fl |= MS_BIND | MS_REC;
  }
  int fd = ensure_in_root(m->dst, isdir);
  if (mount(isbind ? m->src : m->type, fdp(fd), isbind ? NULL : m->type, fl, isbind ? NULL : data) < 0)
    die("mount %s %s on %s: %s", m->type, m->src, m->dst, strerror(errno));
  close(fd);
  if (ro || (isbind && (fl & (MS_NOSUID | MS_NODEV | MS_NOEXEC)))) {
    fd = open_in_root(m->dst, O_PATH);
    if (fd < 0) DIE_ERRNO("resolve", m->dst);
    unsigned long rfl = MS_REMOUNT | (fl & (MS_NOSUID | MS_NODEV | MS_NOEXEC)) | (ro ? MS_RDONLY : 0);
    if (isbind) rfl |= MS_BIND;
    if (mount(NULL, fdp(fd), NULL, rfl, isbind ? NULL : data) < 0) die("remount %s read-only: %s", m->dst, strerror(errno));
    close(fd);
  }
}

/* ---- /dev ------------------------------------------------------------------------- */

static void setup_dev(void) {
  int fd = ensure_in_root("/dev", 1);
  if (mount("tmpfs", fdp(fd), "tmpfs", MS_NOSUID | MS_STRICTATIME, "mode=755,size=65536k") < 0) DIE_ERRNO("mount tmpfs on", "/dev");
  close(fd);
  int dfd = open_in_root("/dev", O_RDONLY | O_DIRECTORY);
  if (dfd < 0) DIE_ERRNO("open", "/dev");
  static const struct {
    const char *name;
    unsigned maj, min;
  } devs[] = {{"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7}, {"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0}};
  for (size_t i = 0; i < sizeof devs / sizeof devs[0]; i++) {
    if (mknodat(dfd, devs[i].name, S_IFCHR | 0666, makedev(devs[i].maj, devs[i].min)) < 0) DIE_ERRNO("mknod /dev/", devs[i].name);
    fchmodat(dfd, devs[i].name, 0666, 0);
  }
  mkdirat(dfd, "pts", 0755);
  mkdirat(dfd, "shm", 01777);
  mkdirat(dfd, "mqueue", 0755);
  int pfd = openat(dfd, "pts", O_PATH | O_CLOEXEC);
  if (mount("devpts", fdp(pfd), "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5") < 0)
    DIE_ERRNO("mount devpts on", "/dev/pts");
  close(pfd);
  int sfd = openat(dfd, "shm", O_PATH | O_CLOEXEC);
  if (mount("shm", fdp(sfd), "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=65536k") < 0) DIE_ERRNO("mount tmpfs on", "/dev/shm");
  close(sfd);
  if (symlinkat("pts/ptmx", dfd, "ptmx") < 0 || symlinkat("/proc/self/fd", dfd, "fd") < 0 ||
      symlinkat("/proc/self/fd/0", dfd, "stdin") < 0 || symlinkat("/proc/self/fd/1", dfd, "stdout") < 0 ||
      symlinkat("/proc/self/fd/2", dfd, "stderr") < 0 || symlinkat("/proc/kcore", dfd, "core") < 0)
    DIE_ERRNO("symlink in", "/dev");
  close(dfd);
}

/* ---- after pivot_root: runc's masked and read-only paths -------------------------- */

static void mask_paths(void) {
  static const char *masked[] = {"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                                 "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
                                 "/sys/firmware", "/sys/devices/virtual/powercap", NULL};
  static const char *readonly[] = {"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger", NULL};
  for (int i = 0; masked[i]; i++) {
    struct stat st;
    if (stat(masked[i], &st) < 0) continue;
    if (S_ISDIR(st.st_mode)) {
      if (mount("tmpfs", masked[i], "tmpfs", MS_RDONLY, "size=0") < 0) DIE_ERRNO("mask", masked[i]);
    } else if (mount("/dev/null", masked[i], NULL, MS_BIND, NULL) < 0)
      DIE_ERRNO("mask", masked[i]);
  }
  for (int i = 0; readonly[i]; i++) {
    if (access(readonly[i], F_OK) < 0) continue;
    if (mount(readonly[i], readonly[i], NULL, MS_BIND | MS_REC, NULL) < 0) DIE_ERRNO("bind", readonly[i]);
    if (mount(NULL, readonly[i], NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
      DIE_ERRNO("remount read-only", readonly[i]);
  }
}

static void lo_up(void) {
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) DIE_ERRNO("socket", "lo");
  struct ifreq ifr = {0};
  strcpy(ifr.ifr_name, "lo");
  if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0) DIE_ERRNO("get flags", "lo");
  ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
  if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0) DIE_ERRNO("bring up", "lo");
  close(s);
}

static void set_caps(void) {
  int last = CAP_LAST_CAP;
  FILE *f = fopen("/proc/sys/kernel/cap_last_cap", "re");
  if (f) {
    if (fscanf(f, "%d", &last) != 1) last = CAP_LAST_CAP;
    fclose(f);
  }
  for (int c = 0; c <= last; c++)
    if (!(caps & (1ULL << c)) && prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0 && errno != EINVAL) die("drop capability %d: %s", c, strerror(errno));
  prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
}

static void set_ids_and_caps(void) {
  if (have_user) {
    if (setgroups(ngroups, groups) < 0) DIE_ERRNO("setgroups", "");
    if (setresgid(gid, gid, gid) < 0) DIE_ERRNO("setgid", "");
    if (setresuid(uid, uid, uid) < 0) DIE_ERRNO("setuid", "");
  }
  struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
  struct __user_cap_data_struct d[2];
  if (syscall(SYS_capget, &h, d) < 0) DIE_ERRNO("capget", "");
  uint32_t lo = (uint32_t)caps, hi = (uint32_t)(caps >> 32);
  d[0].effective &= lo;
  d[0].permitted &= lo;
  d[0].inheritable &= lo;
  d[1].effective &= hi;
  d[1].permitted &= hi;
  d[1].inheritable &= hi;
  if (syscall(SYS_capset, &h, d) < 0) DIE_ERRNO("capset", "");
}

/* exec with the container's PATH; report 127/126 like a shell would */
static void exec_cmd(void) {
  const char *path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  for (int i = 0; i < nenv; i++)
    if (!strncmp(envv[i], "PATH=", 5)) path = envv[i] + 5;
  const char *cmd = argv_cmd[0];
  int err = ENOENT;
  if (strchr(cmd, '/')) {
    execve(cmd, argv_cmd, envv);
    err = errno;
  } else {
    int saw_eacces = 0;
    char buf[PATH_MAX];
    const char *p = path;
    while (1) {
      const char *e = strchr(p, ':');
      size_t l = e ? (size_t)(e - p) : strlen(p);
      snprintf(buf, sizeof buf, "%.*s%s%s", (int)l, p, l ? "/" : "", cmd);
      execve(buf, argv_cmd, envv);
      if (errno == EACCES) saw_eacces = 1;
      else if (errno != ENOENT && errno != ENOTDIR) {
        err = errno;
        break;
      }
      if (!e) break;
      p = e + 1;
    }
    if (err == ENOENT && saw_eacces) err = EACCES;
    if (err == ENOENT) {
      char buf2[4096];
      int n = snprintf(buf2, sizeof buf2, "X127 exec \"%s\": executable file not found in $PATH\n", cmd);
      if (write(errpipe[1], buf2, n) < 0) {
      }
      _exit(127);
    }
  }
  char buf2[4096];
  int code = (err == ENOENT) ? 127 : 126;
  int n = snprintf(buf2, sizeof buf2, "X%d exec \"%s\": %s\n", code, cmd, strerror(err));
  if (write(errpipe[1], buf2, n) < 0) {
  }
  _exit(code);
}

static int child_main(void) {
  close(errpipe[0]);
  prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
  /* default signal dispositions for the command */
  signal(SIGTERM, SIG_DFL);
  signal(SIGINT, SIG_DFL);
  signal(SIGHUP, SIG_DFL);
  signal(SIGPIPE, SIG_DFL);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);

  for (int i = 0; i < ncgroups; i++) {
    int fd = open(cgroup_procs[i], O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, "0", 1) < 0) DIE_ERRNO("join cgroup", cgroup_procs[i]);
    close(fd);
  }
  if (ncgroups && unshare(CLONE_NEWCGROUP) < 0) DIE_ERRNO("unshare", "cgroup namespace");

  if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) DIE_ERRNO("make / private", "");
  if (mount(rootfs, rootfs, NULL, MS_BIND | MS_REC, NULL) < 0) DIE_ERRNO("bind rootfs", rootfs);
  rootfd = open(rootfs, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (rootfd < 0) DIE_ERRNO("open rootfs", rootfs);

  if (!no_proc) {
    int fd = ensure_in_root("/proc", 1);
    if (mount("proc", fdp(fd), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0) DIE_ERRNO("mount proc on", "/proc");
    close(fd);
  }
  if (!no_dev) setup_dev();
  if (!no_sys) {
    int fd = ensure_in_root("/sys", 1);
    if (mount("sysfs", fdp(fd), "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0) {
      /* sysfs can't be mounted in the host network namespace from a new mount ns on some kernels: bind it */
      if (mount("/sys", fdp(fd), NULL, MS_BIND | MS_REC, NULL) < 0) DIE_ERRNO("mount sysfs on", "/sys");
      int fd2 = open_in_root("/sys", O_PATH);
      mount(NULL, fdp(fd2), NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
      close(fd2);
    }
    close(fd);
  }
  for (int i = 0; i < nmounts; i++) do_mount(&mounts[i]);

  if (fchdir(rootfd) < 0) DIE_ERRNO("chdir", rootfs);
  if (!strcmp(mode, "chroot")) {
    if (chroot(".") < 0) DIE_ERRNO("chroot", rootfs);
  } else {
    if (syscall(SYS_pivot_root, ".", ".") < 0) DIE_ERRNO("pivot_root", rootfs);
    if (umount2(".", MNT_DETACH) < 0) DIE_ERRNO("detach old root", "");
  }
  if (chdir("/") < 0) DIE_ERRNO("chdir", "/");
  close(rootfd);
  if (!no_proc) mask_paths();

  if (hostname && sethostname(hostname, strlen(hostname)) < 0) DIE_ERRNO("sethostname", hostname);
  if (newnet) lo_up();
  for (int i = 0; i < nrlims; i++) {
    struct rlimit rl = {rlims[i].soft, rlims[i].hard};
    if (setrlimit(rlims[i].res, &rl) < 0) die("setrlimit %d %llu:%llu: %s", rlims[i].res, (unsigned long long)rl.rlim_cur, (unsigned long long)rl.rlim_max, strerror(errno));
  }
  if (chdir(cwd) < 0) DIE_ERRNO("chdir to working directory", cwd);
  set_caps();
  set_ids_and_caps();
  if (have_user && uid != 0 && chdir(cwd) < 0) DIE_ERRNO("chdir to working directory", cwd);
  if (no_new_privs && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) DIE_ERRNO("set", "no_new_privs");
  /* nothing of ours may leak into the container */
  syscall(SYS_close_range, 3, ~0U, 4 /* CLOSE_RANGE_CLOEXEC */);
  exec_cmd();
  return 127;
}

/* ---- outer ------------------------------------------------------------------------ */

static void on_signal(int sig) {
  (void)sig;
  if (child_pid > 0) kill(child_pid, SIGKILL);
}

/* Remove the stubs the child created (files, then dirs, newest first), only if still empty. */
static void remove_stubs(char *list) {
  char *lines[1024];
  int n = 0;
  for (char *save = NULL, *l = strtok_r(list, "\n", &save); l && n < 1024; l = strtok_r(NULL, "\n", &save))
    if (l[0] == 'D' || l[0] == 'F') lines[n++] = l;
  if (!n) return;
  rootfd = open(rootfs, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (rootfd < 0) return;
  for (int i = n - 1; i >= 0; i--) {
    char *p = lines[i] + 1;
    char parent[PATH_MAX];
    int has_dir;
    const char *name = split_last(p, parent, &has_dir);
    int pfd = open_in_root(has_dir && parent[0] ? parent : "/", O_PATH | O_DIRECTORY);
    if (pfd < 0) continue;
    int dfd = open(fdp(pfd), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    close(pfd);
    if (dfd < 0) continue;
    struct stat pst, st;
    fstat(dfd, &pst);
    if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
      int removed = 0;
      if (lines[i][0] == 'D' && S_ISDIR(st.st_mode)) removed = unlinkat(dfd, name, AT_REMOVEDIR) == 0;
      else if (lines[i][0] == 'F' && S_ISREG(st.st_mode) && st.st_size == 0) removed = unlinkat(dfd, name, 0) == 0;
      if (removed) {
        struct timespec ts[2] = {pst.st_atim, pst.st_mtim};
        futimens(dfd, ts);
      }
    }
    close(dfd);
  }
  close(rootfd);
}

static rlim_t parse_rlim(const char *s) {
  if (!strcmp(s, "unlimited") || !strcmp(s, "-1")) return RLIM_INFINITY;
  return (rlim_t)strtoull(s, NULL, 10);
}

static int rlimit_by_name(const char *n) {
  static const struct {
    const char *name;
    int res;
  } t[] = {{"core", RLIMIT_CORE},       {"cpu", RLIMIT_CPU},         {"data", RLIMIT_DATA},     {"fsize", RLIMIT_FSIZE},
           {"locks", RLIMIT_LOCKS},     {"memlock", RLIMIT_MEMLOCK}, {"msgqueue", RLIMIT_MSGQUEUE}, {"nice", RLIMIT_NICE},
           {"nofile", RLIMIT_NOFILE},   {"nproc", RLIMIT_NPROC},     {"rss", RLIMIT_RSS},       {"rtprio", RLIMIT_RTPRIO},
           {"rttime", RLIMIT_RTTIME},   {"sigpending", RLIMIT_SIGPENDING}, {"stack", RLIMIT_STACK}, {"as", RLIMIT_AS}};
  for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
    if (!strcmp(t[i].name, n)) return t[i].res;
  return -1;
}

int main(int argc, char **argv) {
  int i = 1;
  for (; i < argc; i++) {
    const char *a = argv[i];
#define NEED(k)                                              \
  do {                                                       \
    if (i + (k) >= argc) usage_fail("missing value for", a); \
  } while (0)
    if (!strcmp(a, "--")) {
      i++;
      break;
    } else if (!strcmp(a, "--version")) {
      printf("%s\n", PROTOCOL);
      return 0;
    } else if (!strcmp(a, "--rootfs")) {
      NEED(1);
      rootfs = argv[++i];
    } else if (!strcmp(a, "--mode")) {
      NEED(1);
      mode = argv[++i];
    } else if (!strcmp(a, "--net-none")) {
      newnet = 1;
    } else if (!strcmp(a, "--hostname")) {
      NEED(1);
      hostname = argv[++i];
    } else if (!strcmp(a, "--cwd")) {
      NEED(1);
      cwd = argv[++i];
    } else if (!strcmp(a, "--user")) {
      NEED(3);
      have_user = 1;
      uid = (uid_t)strtoul(argv[++i], NULL, 10);
      gid = (gid_t)strtoul(argv[++i], NULL, 10);
      char *gl = argv[++i];
      for (char *save = NULL, *g = strtok_r(gl, ",", &save); g && ngroups < MAX_ITEMS; g = strtok_r(NULL, ",", &save))
        groups[ngroups++] = (gid_t)strtoul(g, NULL, 10);
    } else if (!strcmp(a, "--env")) {
      NEED(1);
      if (nenv < 4094) envv[nenv++] = argv[++i];
      else usage_fail("too many --env", NULL);
    } else if (!strcmp(a, "--mount")) {
      NEED(4);
      if (nmounts >= MAX_ITEMS) usage_fail("too many --mount", NULL);
      mounts[nmounts].type = argv[++i];
      mounts[nmounts].src = argv[++i];
      mounts[nmounts].dst = argv[++i];
      mounts[nmounts].opts = argv[++i];
      nmounts++;
    } else if (!strcmp(a, "--rlimit")) {
      NEED(3);
      int r = rlimit_by_name(argv[i + 1]);
      if (r < 0) usage_fail("unknown rlimit", argv[i + 1]);
      if (nrlims >= 64) usage_fail("too many --rlimit", NULL);
      rlims[nrlims].res = r;
      rlims[nrlims].soft = parse_rlim(argv[i + 2]);
      rlims[nrlims].hard = parse_rlim(argv[i + 3]);
      nrlims++;
      i += 3;
    } else if (!strcmp(a, "--cgroup-procs")) {
      NEED(1);
      if (ncgroups >= 64) usage_fail("too many --cgroup-procs", NULL);
      cgroup_procs[ncgroups++] = argv[++i];
    } else if (!strcmp(a, "--caps")) {
      NEED(1);
      caps = strtoull(argv[++i], NULL, 16);
    } else if (!strcmp(a, "--no-new-privs")) {
      no_new_privs = 1;
    } else if (!strcmp(a, "--no-proc")) {
      no_proc = 1;
    } else if (!strcmp(a, "--no-dev")) {
      no_dev = 1;
    } else if (!strcmp(a, "--no-sys")) {
      no_sys = 1;
    } else if (!strcmp(a, "--status-fd")) {
      NEED(1);
      status_fd = atoi(argv[++i]);
      fcntl(status_fd, F_SETFD, FD_CLOEXEC);
    } else {
      usage_fail("unknown option", a);
    }
  }
  if (!rootfs) usage_fail("--rootfs is required", NULL);
  if (i >= argc) usage_fail("no command given", NULL);
  if (strcmp(mode, "pivot") && strcmp(mode, "chroot")) usage_fail("--mode must be pivot or chroot, not", mode);
  argv_cmd = &argv[i];
  envv[nenv] = NULL;

  prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
  if (getppid() == 1) {
    /* our parent (node) is already gone */
    report("error parent exited");
    return 1;
  }
  if (pipe2(errpipe, O_CLOEXEC) < 0) {
    report("error pipe: %s", strerror(errno));
    return 1;
  }
  /* block the forwarded signals until the handler knows the child */
  sigset_t set, old;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  sigaddset(&set, SIGQUIT);
  sigprocmask(SIG_BLOCK, &set, &old);
  struct sigaction sa = {0};
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGHUP, &sa, NULL);
  sigaction(SIGQUIT, &sa, NULL);

  unsigned long flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC | (newnet ? CLONE_NEWNET : 0);
  pid_t pid = (pid_t)syscall(SYS_clone, flags | SIGCHLD, NULL, NULL, NULL, NULL);
  if (pid < 0) {
    report("error clone (new namespaces): %s", strerror(errno));
    return 1;
  }
  if (pid == 0) return child_main();
  child_pid = pid;
  sigprocmask(SIG_SETMASK, &old, NULL);
  close(errpipe[1]);

  /* collect stub notes and errors until the child execs (pipe closes) or dies */
  size_t cap = 8192, len = 0;
  char *msgs = malloc(cap);
  for (;;) {
    if (len + 4096 > cap) msgs = realloc(msgs, cap *= 2);
    ssize_t n = read(errpipe[0], msgs + len, cap - len - 1);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    len += (size_t)n;
  }
  msgs[len] = 0;
  close(errpipe[0]);

  int st;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  char *err = NULL, *xerr = NULL;
  for (char *l = msgs; l && *l;) {
    char *nl = strchr(l, '\n');
    if (nl) *nl = 0;
    if (l[0] == 'E' && !err) err = strdup(l + 1);
    if (l[0] == 'X' && !xerr) xerr = strdup(l + 1);
    if (nl) *nl = '\n';
    l = nl ? nl + 1 : NULL;
  }
  remove_stubs(msgs);
  if (err) {
    report("error %s", err);
    return 1;
  }
  if (xerr) {
    /* "127 exec ...": print the message like a shell, report the code */
    char *sp = strchr(xerr, ' ');
    if (sp) {
      char line[4200];
      int n = snprintf(line, sizeof line, "%s\n", sp + 1);
      if (write(2, line, n) < 0) {
      }
    }
  }
  if (WIFSIGNALED(st)) report("signal %d", WTERMSIG(st));
  else report("exit %d", WEXITSTATUS(st));
  return 0;
}
