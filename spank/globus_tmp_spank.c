/*
 * globus_tmp_spank.c - run globus-tmp's private-/tmp helper from a job's extern step.
 *
 * Why a SPANK plugin: with JobContainerType=job_container/tmpfs, each job's private /tmp
 * (BasePath/<node>/<jobid>/.<jobid>) is created by the job's extern step after the Prolog
 * and deleted before the Epilog (Slurm 22.05 as Debian ships it), so neither hook ever
 * sees it. SPANK callbacks in the extern step run at exactly those moments, as root, in
 * slurmd's mount namespace: slurm_spank_init right after the directory exists,
 * slurm_spank_exit right before it is deleted.
 *
 * The plugin holds no logic. It runs
 *     HELPER init JOBID UID      (slurm_spank_init)
 *     HELPER exit JOBID UID      (slurm_spank_exit)
 * with a clean environment (PATH, SLURMD_NODENAME, SLURM_CONF, and GLOBUS_TMP_TIMEOUT: the
 * seconds it has, so the helper budgets every step within them), stdin/stdout/stderr on
 * /dev/null (the helper logs itself), in a session of its own, SIGTERM ignored, bounded
 * by timeout=: on timeout the helper's whole process group is SIGKILLed. It never fails a job: every
 * callback returns 0, a failure is one line in slurmd's log.
 *
 * plugstack.conf:
 *     optional /path/globus_tmp_spank.so helper=/path/globus-tmp-privatetmp [timeout=30]
 *
 * sbatch, salloc and srun read plugstack.conf too: in their contexts it does nothing.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <slurm/slurm.h>
#include <slurm/spank.h>

SPANK_PLUGIN(globus_tmp, 1);

#define HELPER_PATH "PATH=/usr/sbin:/usr/bin:/sbin:/bin"

static const char *helper;
static double timeout_s = 30;
static int parsed;

/* Options come with each callback; parse them once per slurmstepd (one error line each). */
static void parse_options(int ac, char **av)
{
	if (parsed)
		return;
	parsed = 1;
	for (int i = 0; i < ac; i++) {
		if (!strncmp(av[i], "helper=", 7) && av[i][7]) {
			helper = av[i] + 7;
		} else if (!strncmp(av[i], "timeout=", 8)) {
			char *end;
			double t = strtod(av[i] + 8, &end);
			/* strtod takes "nan" and "inf"; NaN passes t <= 0 and would never expire */
			if (end == av[i] + 8 || *end || !isfinite(t) || t <= 0)
				slurm_error("globus_tmp: bad %s, using timeout=%g", av[i], timeout_s);
			else
				timeout_s = t;
		} else {
			slurm_error("globus_tmp: unknown option %s ignored", av[i]);
		}
	}
	if (!helper)
		slurm_error("globus_tmp: no helper= in plugstack.conf, doing nothing");
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* In the child, between fork and execve: async-signal-safe calls only (slurmstepd has
 * threads). The helper must not inherit slurmstepd's signal mask, ignored signals, or
 * its descriptors (step sockets), and gets a session of its own so that a timeout can
 * kill everything it started. */
static void exec_helper(char **argv, char **envp)
{
	sigset_t none;
	int fd;

	setsid();
	for (int sig = 1; sig < NSIG; sig++)
		if (sig != SIGKILL && sig != SIGSTOP)
			signal(sig, SIG_DFL);
	/* A job ended by its time limit or scancel gets SIGTERM on every process of its
	 * steps, the helper too (measured: it died 20 ms into its exit run, before it could
	 * move anything). Ignored across execve; our timeout and Slurm's SIGKILL after
	 * KillWait still bound it. */
	signal(SIGTERM, SIG_IGN);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	fd = open("/dev/null", O_RDWR);
	if (fd < 0)
		_exit(126);
	dup2(fd, 0);
	dup2(fd, 1);
	dup2(fd, 2);
	closefrom(3);
	execve(argv[0], argv, envp);
	_exit(127);
}

static void run_helper(const char *what, uint32_t job_id, uid_t uid, const char *node,
		       const char *conf)
{
	char job[16], user[16], node_env[256], conf_env[4096], timeout_env[64];
	char *argv[] = { (char *)helper, (char *)what, job, user, NULL };
	char *envp[5] = { HELPER_PATH, timeout_env, NULL, NULL, NULL };
	int n = 2, status = 0;
	pid_t pid, r;
	double deadline;

	snprintf(timeout_env, sizeof(timeout_env), "GLOBUS_TMP_TIMEOUT=%g", timeout_s);
	snprintf(job, sizeof(job), "%u", job_id);
	snprintf(user, sizeof(user), "%u", (unsigned)uid);
	if (node && snprintf(node_env, sizeof(node_env), "SLURMD_NODENAME=%s", node) <
			    (int)sizeof(node_env))
		envp[n++] = node_env;
	if (conf && snprintf(conf_env, sizeof(conf_env), "SLURM_CONF=%s", conf) <
			    (int)sizeof(conf_env))
		envp[n++] = conf_env;

	pid = fork();
	if (pid < 0) {
		slurm_error("globus_tmp: %s job %u: fork: %m", what, job_id);
		return;
	}
	if (pid == 0)
		exec_helper(argv, envp);

	/* Poll, so that a helper that hangs cannot hold the job (or its end) forever. */
	deadline = now() + timeout_s;
	while ((r = waitpid(pid, &status, WNOHANG)) == 0 || (r < 0 && errno == EINTR)) {
		if (now() >= deadline) {
			kill(-pid, SIGKILL); /* its process group: setsid made pid the pgid */
			kill(pid, SIGKILL);  /* in case setsid had not run yet */
			while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
				;
			slurm_error("globus_tmp: %s job %u: %s killed after %gs timeout",
				    what, job_id, helper, timeout_s);
			return;
		}
		struct timespec tick = { 0, 20 * 1000 * 1000 };
		nanosleep(&tick, NULL);
	}
	if (r < 0)
		slurm_error("globus_tmp: %s job %u: waitpid: %m", what, job_id);
	else if (WIFSIGNALED(status))
		slurm_error("globus_tmp: %s job %u: %s killed by signal %d", what, job_id,
			    helper, WTERMSIG(status));
	else if (WEXITSTATUS(status))
		slurm_error("globus_tmp: %s job %u: %s exited %d", what, job_id, helper,
			    WEXITSTATUS(status));
}

/* Acts only in slurmstepd (remote context) of a job's extern step: that step lives
 * exactly as long as the job's private /tmp on this node. */
static int hook(spank_t sp, int ac, char **av, const char *what)
{
	uint32_t job_id, step_id;
	uid_t uid;

	if (spank_context() != S_CTX_REMOTE)
		return 0;
	if (spank_get_item(sp, S_JOB_STEPID, &step_id) != ESPANK_SUCCESS ||
	    step_id != SLURM_EXTERN_CONT)
		return 0;
	parse_options(ac, av);
	if (!helper)
		return 0;
	if (spank_get_item(sp, S_JOB_ID, &job_id) != ESPANK_SUCCESS ||
	    spank_get_item(sp, S_JOB_UID, &uid) != ESPANK_SUCCESS) {
		slurm_error("globus_tmp: %s: no job id or uid from Slurm", what);
		return 0;
	}
	/* slurmd exports SLURMD_NODENAME (its -N name: several nodes may share a host)
	 * and SLURM_CONF to its own environment, which slurmstepd inherits. */
	run_helper(what, job_id, uid, getenv("SLURMD_NODENAME"), getenv("SLURM_CONF"));
	return 0;
}

int slurm_spank_init(spank_t sp, int ac, char **av)
{
	return hook(sp, ac, av, "init");
}

int slurm_spank_exit(spank_t sp, int ac, char **av)
{
	return hook(sp, ac, av, "exit");
}
