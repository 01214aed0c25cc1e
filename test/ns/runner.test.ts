/**
 * The build container runtime against a busybox rootfs: isolation (PID 1, no host processes, no
 * mount, no CAP_SYS_ADMIN, no host paths via /proc/1/root or symlinks, only lo), limits (memory,
 * pids, rlimits), users, mounts, exit codes, timeout/abort killing the whole tree, and cleanup.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { BuiltinRunner, checkResult, createRunner, type RunOptions, type Runner } from '../../src/ns/index.js';
import { RunError } from '../../src/oci/index.js';
import { procsWith, requireTool, ROOT } from '../helpers.js';
import { execFileSync } from 'node:child_process';
import { makeBusyboxRootfs } from './rootfs.js';

function sink(): Writable & { text(): string } {
  const chunks: Buffer[] = [];
  const w = new Writable({
    write(c: Buffer, _e, cb) {
      chunks.push(c);
      cb();
    },
  }) as Writable & { text(): string };
  w.text = () => Buffer.concat(chunks).toString('utf8');
  return w;
}

async function run(r: Runner, script: string, o: Partial<RunOptions> & { rootfs: string }) {
  const out = sink();
  const err = sink();
  const res = await r.run(['/bin/sh', '-c', script], { ...o, stdio: { stdout: out, stderr: err } });
  return { res, out: out.text(), err: err.text() };
}

let base: string;
let rootfs: string;
before(() => {
  base = mkdtempSync(join(tmpdir(), 'tsimage-nstest-'));
  rootfs = makeBusyboxRootfs(join(base, 'rootfs'), { etcExtra: true });
});
after(() => rmSync(base, { recursive: true, force: true }));

for (const isolation of ['builtin', 'chroot', 'oci'] as const) {
  describe(`runner --isolation ${isolation}`, () => {
    let r: Runner;
    before(async () => {
      if (isolation === 'oci') requireTool('runc');
      r = await createRunner(isolation);
    });

    it('runs the command with env, cwd and exit code', async () => {
      const { res, out } = await run(r, 'echo "$FOO $PWD $HOME"; exit 3', { rootfs, env: ['FOO=bar'], cwd: '/tmp' });
      assert.equal(res.exitCode, 3);
      assert.equal(out, 'bar /tmp /root\n');
      assert.throws(() => checkResult(['x'], res), (e: unknown) => e instanceof RunError && /exit code 3/.test(e.message));
    });

    it('sees itself as PID 1 and no host processes', async () => {
      const { res, out } = await run(r, 'echo $$; ls /proc | grep -c "^[0-9]"; test -e /proc/' + process.pid + ' && echo HOSTPID; true', { rootfs });
      assert.equal(res.exitCode, 0);
      const [pid, count] = out.split('\n');
      assert.equal(pid, '1');
      assert.ok(Number(count) <= 4, `container sees ${count} processes`);
      assert.ok(!out.includes('HOSTPID'));
    });

    it('cannot mount and has no CAP_SYS_ADMIN; no_new_privs set', async () => {
      const { res, out } = await run(r, 'mkdir -p /mnt/x; mount -t tmpfs t /mnt/x 2>/dev/null && echo MOUNTED; grep -E "^(CapEff|CapBnd|NoNewPrivs)" /proc/self/status', { rootfs });
      assert.equal(res.exitCode, 0);
      assert.ok(!out.includes('MOUNTED'), out);
      const eff = BigInt('0x' + /CapEff:\s*([0-9a-f]+)/.exec(out)![1]);
      const bnd = BigInt('0x' + /CapBnd:\s*([0-9a-f]+)/.exec(out)![1]);
      assert.equal((eff >> 21n) & 1n, 0n, 'CAP_SYS_ADMIN effective');
      assert.equal((bnd >> 21n) & 1n, 0n, 'CAP_SYS_ADMIN bounding');
      assert.equal((eff >> 0n) & 1n, 1n, 'CAP_CHOWN kept');
      assert.match(out, /NoNewPrivs:\s*1/);
      rmSync(join(rootfs, 'mnt'), { recursive: true, force: true });
    });

    it('with network none sees only lo (up)', async () => {
      const { res, out } = await run(r, 'ls /sys/class/net; cat /sys/class/net/lo/operstate; ip addr show lo | grep -c 127.0.0.1', { rootfs, network: 'none' });
      assert.equal(res.exitCode, 0, out);
      const lines = out.trim().split('\n');
      assert.equal(lines[0], 'lo');
      assert.equal(lines[2], '1');
    });

    it('cannot reach host paths via /proc/1/root, symlinks or mounts on symlinks', async (t) => {
      const secret = mkdtempSync(join(tmpdir(), 'tsimage-nssecret-'));
      t.after(() => rmSync(secret, { recursive: true, force: true }));
      writeFileSync(join(secret, 'flag'), 'host-secret');
      symlinkSync(secret, join(rootfs, 'escape'));
      symlinkSync('../../../../../../' + secret, join(rootfs, 'escape2'));
      t.after(() => {
        rmSync(join(rootfs, 'escape'), { force: true });
        rmSync(join(rootfs, 'escape2'), { force: true });
      });
      const { out } = await run(
        r,
        `cat /proc/1/root${secret}/flag 2>&1; cat /escape/flag 2>&1; cat /escape2/flag 2>&1; ls /proc/1/root/ | grep -c work; echo done`,
        { rootfs, mounts: [{ type: 'tmpfs', destination: '/escape/sub' }] },
      );
      assert.ok(!out.includes('host-secret'), out);
      assert.match(out, /done/);
      // the tmpfs went inside the rootfs, not onto the host dir the symlink names; and the stub is gone again
      assert.ok(!existsSync(join(secret, 'sub')), 'mount followed a symlink out of the rootfs');
      if (isolation !== 'oci') assert.ok(!existsSync(join(rootfs, secret)), 'mount-point stub left behind');
      rmSync(join(rootfs, secret), { recursive: true, force: true });
    });

    it('gets a minimal /dev, read-only /sys, masked /proc paths and its own /etc files', async () => {
      const script = [
        'ls /dev | sort | tr "\\n" " "; echo',
        'echo x > /sys/kernel/x 2>/dev/null && echo SYSWRITE; grep -q " /sys .*ro," /proc/self/mountinfo && echo SYSRO',
        'head -c 16 /proc/kcore 2>/dev/null | wc -c; cat /proc/keys 2>/dev/null | wc -l',
        'echo x > /proc/sys/kernel/hostname 2>/dev/null && echo PROCSYSWRITE',
        'hostname; cat /etc/hostname; grep -c localhost /etc/hosts',
        'head -c 4 /dev/urandom | wc -c; echo hi > /dev/null && echo NULLOK; test -c /dev/pts/ptmx && echo PTS; test -d /dev/shm && echo SHM',
      ].join('; ');
      const { res, out } = await run(r, script, { rootfs, hostname: 'builder1' });
      assert.equal(res.exitCode, 0, out);
      const lines = out.trim().split('\n');
      for (const d of ['null', 'zero', 'full', 'random', 'urandom', 'tty', 'pts', 'shm']) assert.ok(lines[0]!.split(' ').includes(d), `/dev/${d} missing: ${lines[0]}`);
      assert.ok(!lines[0]!.split(' ').some((d) => /^(sd|vd|nvme|mem|kmsg)/.test(d)), `host devices visible: ${lines[0]}`);
      assert.ok(!out.includes('SYSWRITE') && out.includes('SYSRO'), out);
      assert.equal(lines[2], '0', '/proc/kcore readable');
      assert.equal(lines[3], '0', '/proc/keys readable');
      assert.ok(!out.includes('PROCSYSWRITE'), '/proc/sys writable');
      assert.deepEqual(lines.slice(4, 7), ['builder1', 'builder1', '2']);
      assert.deepEqual(lines.slice(7), ['4', 'NULLOK', 'PTS', 'SHM']);
    });

    it('resolves users and groups from the image', async () => {
      const a = await run(r, 'id -u; id -g; id -G', { rootfs, user: 'app' });
      assert.equal(a.out, '1000\n1000\n1000 2000\n');
      const b = await run(r, 'id -u; id -g', { rootfs, user: '4242:nogroup' });
      assert.equal(b.out, '4242\n65534\n');
      await assert.rejects(r.run(['true'], { rootfs, user: 'nosuchuser' }), /unable to find user nosuchuser/);
    });

    it('reports a missing command as exit 127 and applies rlimits', async () => {
      const err = sink();
      const res = await r.run(['no-such-command'], { rootfs, stdio: { stderr: err, stdout: 'ignore' } });
      assert.equal(res.exitCode, 127);
      assert.match(err.text(), /no-such-command/);
      const { out } = await run(r, 'ulimit -n', { rootfs, limits: { rlimits: { nofile: [123, 456] } } });
      assert.equal(out.trim(), '123');
    });

    it('bind mounts read-only and read-write, and tmpfs', async (t) => {
      const host = mkdtempSync(join(tmpdir(), 'tsimage-nsbind-'));
      t.after(() => rmSync(host, { recursive: true, force: true }));
      writeFileSync(join(host, 'in'), 'from-host');
      const ro = await run(r, 'cat /data/in; echo x > /data/new 2>/dev/null && echo WROTE; echo y > /scratch/f && cat /scratch/f', {
        rootfs,
        mounts: [
          { type: 'bind', source: host, destination: '/data', readonly: true },
          { type: 'tmpfs', destination: '/scratch' },
        ],
      });
      assert.equal(ro.out, 'from-hosty\n');
      assert.ok(!existsSync(join(host, 'new')));
      const rw = await run(r, 'echo x > /data/new', { rootfs, mounts: [{ type: 'bind', source: host, destination: '/data' }] });
      assert.equal(rw.res.exitCode, 0);
      assert.equal(readFileSync(join(host, 'new'), 'utf8'), 'x\n');
      if (isolation !== 'oci') {
        assert.ok(!existsSync(join(rootfs, 'data')) && !existsSync(join(rootfs, 'scratch')), 'mount-point stubs left behind');
      }
      rmSync(join(rootfs, 'data'), { recursive: true, force: true });
      rmSync(join(rootfs, 'scratch'), { recursive: true, force: true });
    });

    it('kills the whole process tree on timeout and on abort', async () => {
      const marker = `tsimage-marker-${isolation}-${process.pid}`;
      const t0 = Date.now();
      const res = await r.run(['/bin/sh', '-c', `sleep 30 & sleep 31 & wait; : ${marker}`], { rootfs, timeout: 300, stdio: { stdout: 'ignore' } });
      assert.ok(Date.now() - t0 < 5000);
      assert.equal(res.timedOut, true);
      assert.equal(res.signal, 'SIGKILL');
      const ac = new AbortController();
      setTimeout(() => ac.abort(), 200);
      const res2 = await r.run(['/bin/sh', '-c', `sleep 32 & wait; : ${marker}`], { rootfs, signal: ac.signal });
      assert.equal(res2.aborted, true);
      await new Promise((ok) => setTimeout(ok, 100));
      assert.deepEqual(procsWith(marker), []);
      assert.deepEqual(procsWith('sleep 3'), []);
    });

    it('hits the pids limit', async () => {
      const { out } = await run(r, 'n=0; for i in 1 2 3 4 5 6 7 8 9 10 11 12; do sleep 2 & done 2>/dev/null; jobs -p | wc -l; kill $(jobs -p) 2>/dev/null; true', { rootfs, limits: { pids: 6 } });
      assert.ok(Number(out.trim()) < 12, `started ${out.trim()} background jobs under pids.max=6`);
    });

    it('applies CPU quota and shares, memory and pids limits to the container\'s cgroup', async () => {
      const marker = `tsimage-cg-${isolation}-${process.pid}`;
      const running = run(r, `sleep 2; : ${marker}`, { rootfs, limits: { cpus: 0.5, cpuShares: 512, memory: 64 * 1024 * 1024, pids: 50 } });
      let pid: string | undefined;
      for (let i = 0; i < 100 && !pid; i++) {
        await new Promise((ok) => setTimeout(ok, 20));
        pid = procsWith(marker).find((p) => readFileSync(`/proc/${p}/cmdline`, 'utf8').startsWith('/bin/sh'));
      }
      assert.ok(pid, 'container process not found');
      const cg = Object.fromEntries(
        readFileSync(`/proc/${pid}/cgroup`, 'utf8')
          .trim()
          .split('\n')
          .flatMap((l) => {
            const [, ctrls = '', path = ''] = l.split(':');
            return ctrls.split(',').map((c) => [c || 'unified', path]);
          }),
      ) as Record<string, string>;
      const read = (ctrl: string, file: string) => {
        const v2 = existsSync('/sys/fs/cgroup/cgroup.controllers');
        const dir = v2 ? join('/sys/fs/cgroup', cg.unified ?? '') : join('/sys/fs/cgroup', ctrl === 'cpu' && existsSync('/sys/fs/cgroup/cpu,cpuacct') ? 'cpu,cpuacct' : ctrl, cg[ctrl] ?? '');
        return readFileSync(join(dir, file), 'utf8').trim();
      };
      if (existsSync('/sys/fs/cgroup/cgroup.controllers')) {
        assert.equal(read('cpu', 'cpu.max'), '50000 100000');
        assert.equal(read('memory', 'memory.max'), String(64 * 1024 * 1024));
        assert.equal(read('pids', 'pids.max'), '50');
      } else {
        assert.equal(read('cpu', 'cpu.cfs_quota_us'), '50000');
        assert.equal(read('cpu', 'cpu.cfs_period_us'), '100000');
        assert.equal(read('cpu', 'cpu.shares'), '512');
        assert.equal(read('memory', 'memory.limit_in_bytes'), String(64 * 1024 * 1024));
        assert.equal(read('pids', 'pids.max'), '50');
      }
      const { res } = await running;
      assert.equal(res.exitCode, 0);
    });

    it('hits the memory limit (OOM kill)', async () => {
      const { res } = await run(r, 'x=$(head -c 200000000 /dev/zero | tr "\\0" a); echo ${#x}', { rootfs, limits: { memory: 48 * 1024 * 1024 } });
      assert.notEqual(res.exitCode, 0);
      if (isolation !== 'oci') {
        assert.equal(res.signal, 'SIGKILL');
        assert.equal(res.oomKilled, true);
      }
    });
  });
}

describe('runner input checks', () => {
  it('rejects bad input with clear errors', async () => {
    const r = new BuiltinRunner();
    await assert.rejects(r.run([], { rootfs }), /empty command/);
    await assert.rejects(r.run(['true'], { rootfs, mounts: [{ type: 'tmpfs', destination: 'rel' }] }), /must be absolute/);
    await assert.rejects(r.run(['true'], { rootfs, hostname: 'bad host' }), /invalid hostname/);
    await assert.rejects(r.run(['true'], { rootfs: join(base, 'nope') }), /cannot start container/);
  });

  it('says that rootless runs are not supported (a known gap) instead of failing obscurely', () => {
    requireTool('setpriv');
    const script = `import { createRunner } from ${JSON.stringify(join(ROOT, 'dist/src/ns/index.js'))};
      for (const iso of ['builtin', 'chroot', 'oci']) {
        try { await (await createRunner(iso)).run(['true'], { rootfs: '/' }); console.log(iso + ' RAN'); }
        catch (e) { console.log(iso + ': ' + e.message); }
      }`;
    const out = execFileSync('setpriv', ['--reuid', '65534', '--regid', '65534', '--clear-groups', process.execPath, '--input-type=module', '-e', script], {
      encoding: 'utf8',
      cwd: '/',
    });
    const lines = out.trim().split('\n');
    assert.equal(lines.length, 3, out);
    for (const l of lines) assert.match(l, /^(builtin|chroot|oci): running build containers needs root \(running as uid 65534\): rootless mode .* is not supported yet/);
  });
});
