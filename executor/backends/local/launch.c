/* code-exec-launch: what runs in the child between the executor's spawn and bubblewrap.
 *
 * The same steps as launcher.py's bash prologue followed by setpriv, in one small exec:
 * the control pipes to the runner's control fds (the control input arrives as stdin, stdin
 * becomes /dev/null), rlimits, the sandbox's cgroups joined, then (when the policy gives the
 * sandbox a host uid of its own) supplementary groups cleared and gid and uid set for real,
 * effective and saved, the death signal set after the uid change (a credential change clears
 * it) and checked against a parent that is already gone, and bubblewrap exec'd.
 *
 * argv: control_out fsize_kib nofile core_kib as_kib|"" nproc|"" ncgroups cgroup.procs...
 *       uid|"" gid|"" pdeathsig(0|1) -- command...
 * Exit 125 when a step fails, with the step on stderr (the executor reports the sandbox as
 * failed to start). Built with the host's cc (launcher.py); bash is the fallback.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#define CONTROL_IN_FD 3
#define CONTROL_OUT_FD 4

static void fail(const char *step) {
    fprintf(stderr, "code-exec-launch: %s: %s\n", step, strerror(errno));
    _exit(125);
}

static long long number(const char *text, const char *what) {
    char *end;
    errno = 0;
    long long value = strtoll(text, &end, 10);
    if (errno || end == text || *end || value < 0) {
        errno = EINVAL;
        fail(what);
    }
    return value;
}

static void limit(int resource, const char *text, long long unit, const char *what) {
    if (!*text) return;
    rlim_t value = (rlim_t)number(text, what) * (rlim_t)unit;
    struct rlimit rl = {value, value};
    if (setrlimit(resource, &rl)) fail(what);
}

static void join(const char *procs) {
    int fd = open(procs, O_WRONLY | O_CLOEXEC);
    if (fd < 0) fail(procs);
    if (write(fd, "0", 1) != 1) fail(procs);
    close(fd);
}

int main(int argc, char **argv) {
    if (argc < 12) {
        errno = EINVAL;
        fail("arguments");
    }
    int control_out = (int)number(argv[1], "control_out");
    /* stdin is the control input: to fd 3; the control output to fd 4; stdin from /dev/null. */
    if (dup2(0, CONTROL_IN_FD) < 0) fail("control input");
    if (dup2(control_out, CONTROL_OUT_FD) < 0) fail("control output");
    if (control_out != CONTROL_OUT_FD) close(control_out);
    int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (null < 0 || dup2(null, 0) < 0) fail("/dev/null");
    close(null);

    limit(RLIMIT_FSIZE, argv[2], 1024, "RLIMIT_FSIZE");
    limit(RLIMIT_NOFILE, argv[3], 1, "RLIMIT_NOFILE");
    limit(RLIMIT_CORE, argv[4], 1024, "RLIMIT_CORE");
    limit(RLIMIT_AS, argv[5], 1024, "RLIMIT_AS");
    limit(RLIMIT_NPROC, argv[6], 1, "RLIMIT_NPROC");

    long long groups = number(argv[7], "ncgroups");
    int at = 8;
    if (groups > argc - at - 4) {
        errno = EINVAL;
        fail("ncgroups");
    }
    for (long long i = 0; i < groups; i++) join(argv[at++]);

    const char *uid_text = argv[at++], *gid_text = argv[at++], *death = argv[at++];
    if (strcmp(argv[at++], "--") != 0 || at >= argc) {
        errno = EINVAL;
        fail("arguments");
    }
    if (*uid_text || *gid_text) {
        uid_t uid = (uid_t)number(uid_text, "uid");
        gid_t gid = (gid_t)number(gid_text, "gid");
        if (setgroups(0, NULL)) fail("setgroups");
        if (setresgid(gid, gid, gid)) fail("setresgid");
        if (setresuid(uid, uid, uid)) fail("setresuid");
        if (getuid() != uid || geteuid() != uid || getgid() != gid) {
            errno = EPERM;
            fail("identity");
        }
    }
    if (strcmp(death, "1") == 0) {
        pid_t parent = getppid();
        if (prctl(PR_SET_PDEATHSIG, SIGKILL)) fail("PR_SET_PDEATHSIG");
        if (getppid() != parent) _exit(125); /* the executor died before the signal was set */
    }
    execvp(argv[at], argv + at);
    fail(argv[at]);
    return 125;
}
