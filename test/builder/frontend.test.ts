/** Dockerfile front end: word expansion (BuildKit's golden data), line parser, typed instructions, stage graph, errors. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from '../helpers.js';
import { expandWord, expandWords } from '../../src/builder/lex.js';
import { parseDockerfile } from '../../src/builder/parser.js';
import { loadDockerfile, reachableStages, resolveMetaArgs, stageDeps, targetStage } from '../../src/builder/dockerfile.js';
import { DockerfileError } from '../../src/oci/index.js';
import type { Instr } from '../../src/builder/instructions.js';

const DATA = join(ROOT, 'test', 'builder', 'testdata');

function golden(name: string): [string, string][] {
  return readFileSync(join(DATA, name), 'utf8')
    .split('\n')
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => {
      const i = l.indexOf('|');
      return [l.slice(0, i).trim(), l.slice(i + 1).trim()];
    });
}

describe('word expansion', () => {
  const env = new Map([
    ['PWD', '/home'],
    ['SHELL', 'bash'],
    ['NULL', ''],
  ]);
  for (const [input, want] of golden('envVarTest')) {
    it(`expands ${input}`, () => {
      if (want === 'error') assert.throws(() => expandWord(input, env));
      else assert.equal(expandWord(input, env).value, want);
    });
  }
  for (const [input, want] of golden('wordsTest')) {
    it(`splits ${input}`, () => assert.deepEqual(expandWords(input, env).values, want.split('|')));
  }
  it('reports unmatched names', () => {
    assert.deepEqual(expandWord('${A}-$B-$PWD', env).unmatched.sort(), ['A', 'B']);
  });
  it('uses the backtick escape token', () => {
    assert.equal(expandWord('a`$PWD', env, { escape: '`' }).value, 'a$PWD');
    assert.equal(expandWord('C:\\dir', env, { escape: '`' }).value, 'C:\\dir');
  });
});

describe('line parser', () => {
  it('joins continuations, drops comment lines inside them, and reads directives', () => {
    const p = parseDockerfile('# syntax=x\n# escape=`\nFROM a\nRUN echo a `\n  # comment\n\n  && echo b\nCOPY ["a b", "c"] /d/\n');
    assert.equal(p.escape, '`');
    assert.deepEqual(p.directives, { syntax: 'x', escape: '`' });
    assert.equal(p.nodes[1]!.rest, 'echo a   && echo b');
    assert.equal(p.nodes[1]!.startLine, 4);
    assert.equal(p.nodes[1]!.endLine, 7);
    assert.equal(p.nodes[2]!.startLine, 8);
    assert.equal(p.warnings.length, 1);
  });
  it('a directive after an instruction is a comment', () => {
    const p = parseDockerfile('FROM a\n# escape=`\nRUN x \\\n y\n');
    assert.equal(p.escape, '\\');
    assert.equal(p.nodes[1]!.rest, 'x  y');
  });
  it('reads heredocs (quoted names, <<- chomping, several per line)', () => {
    const p = parseDockerfile('FROM a\nRUN <<EOF\necho hi\n  there\nEOF\nCOPY <<A <<-"B" /d/\na $x\nA\n\tb\n\tB\nRUN true\n');
    const run = p.nodes[1]!;
    assert.deepEqual(run.heredocs, [{ name: 'EOF', expand: true, chomp: false, content: 'echo hi\n  there\n' }]);
    const cp = p.nodes[2]!;
    assert.deepEqual(
      cp.heredocs.map((h) => [h.name, h.expand, h.chomp, h.content]),
      [
        ['A', true, false, 'a $x\n'],
        ['B', false, true, 'b\n'],
      ],
    );
    assert.equal(p.nodes[3]!.startLine, 11);
  });
  it('fails on an unterminated heredoc with the line', () => {
    assert.throws(() => parseDockerfile('FROM a\n\nRUN <<EOF\necho\n'), /Dockerfile:3: unterminated heredoc EOF/);
  });
  it('splits builder flags with quotes', () => {
    const p = parseDockerfile('COPY --from=build --chown="1 2" -- --x /y\n');
    assert.deepEqual(p.nodes[0]!.flags, ['--from=build', '--chown=1 2']);
    assert.equal(p.nodes[0]!.rest.trim(), '--x /y');
  });
});

describe('instructions', () => {
  it('types every instruction', () => {
    const bf = loadDockerfile(
      [
        'ARG BASE=busybox',
        'FROM --platform=$BUILDPLATFORM $BASE AS Build',
        'RUN --mount=type=cache,target=/c --network=none echo hi',
        'RUN ["echo", "a b"]',
        'CMD echo x',
        'ENTRYPOINT ["/bin/sh", "-c"]',
        'SHELL ["/bin/bash", "-c"]',
        'ENV A=1 B="x y" C=z\\ w',
        'ENV OLD style value',
        'LABEL "k 1"=v',
        'ARG X Y=2',
        'EXPOSE 80 53/udp',
        'VOLUME ["/a", "/b"]',
        'VOLUME /c /d',
        'USER 1000:1000',
        'WORKDIR /app',
        'STOPSIGNAL SIGKILL',
        'MAINTAINER me',
        'COPY --from=0 --chown=1:2 --chmod=755 --link --parents --exclude=*.md a b /dst/',
        'ADD --checksum=sha256:abc https://example.com/x /x',
        'HEALTHCHECK --interval=1m30s --retries=3 CMD curl -f http://localhost/',
        'HEALTHCHECK NONE',
        'ONBUILD RUN echo child',
      ].join('\n'),
    );
    assert.equal(bf.metaArgs.length, 1);
    const st = bf.stages[0]!;
    assert.equal(st.name, 'build');
    assert.equal(st.from.platform, '$BUILDPLATFORM');
    const k = st.instrs.map((i) => i.kind);
    assert.deepEqual(k, ['RUN', 'RUN', 'CMD', 'ENTRYPOINT', 'SHELL', 'ENV', 'ENV', 'LABEL', 'ARG', 'EXPOSE', 'VOLUME', 'VOLUME', 'USER', 'WORKDIR', 'STOPSIGNAL', 'MAINTAINER', 'COPY', 'ADD', 'HEALTHCHECK', 'HEALTHCHECK', 'ONBUILD']);
    const [run, runJ, , , , env, envOld, label, arg] = st.instrs as [Instr, Instr, Instr, Instr, Instr, Instr, Instr, Instr, Instr];
    assert.ok(run!.kind === 'RUN' && run.shell && run.network === 'none' && run.mounts[0] === 'type=cache,target=/c');
    assert.ok(runJ!.kind === 'RUN' && !runJ.shell);
    assert.deepEqual(runJ.kind === 'RUN' && runJ.cmd, ['echo', 'a b']);
    assert.deepEqual(env!.kind === 'ENV' && env.pairs, [['A', '1'], ['B', '"x y"'], ['C', 'z\\ w']]);
    assert.deepEqual(envOld!.kind === 'ENV' && envOld.pairs, [['OLD', 'style value']]);
    assert.deepEqual(label!.kind === 'LABEL' && label.pairs, [['"k 1"', 'v']]);
    assert.deepEqual(arg!.kind === 'ARG' && arg.args, [{ name: 'X' }, { name: 'Y', value: '2' }]);
    const cp = st.instrs[16]!;
    assert.ok(cp.kind === 'COPY');
    assert.deepEqual([cp.from, cp.chown, cp.chmod, cp.link, cp.parents, cp.exclude, cp.srcs, cp.dest], ['0', '1:2', '755', true, true, ['*.md'], ['a', 'b'], '/dst/']);
    const hc = st.instrs[18]!;
    assert.ok(hc.kind === 'HEALTHCHECK');
    assert.deepEqual([hc.test, hc.interval, hc.retries], [['CMD-SHELL', 'curl -f http://localhost/'], 90e9, 3]);
    const ob = st.instrs[20]!;
    assert.ok(ob.kind === 'ONBUILD' && ob.instr.kind === 'RUN');
  });

  const bad: [string, RegExp][] = [
    ['FROM a\nFROBNICATE x\n', /Dockerfile:2: unknown instruction: FROBNICATE/],
    ['FROM a\nRUNN x\n', /Dockerfile:2: unknown instruction: RUNN \(did you mean RUN\?\)/],
    ['FROM a\n\nCOPY onlyone\n', /Dockerfile:3: COPY requires at least two arguments/],
    ['FROM a\nCMD ["a", 1]\n', /Dockerfile:2: when using JSON array syntax, arrays must be comprised of strings only/],
    ['FROM a b\n', /Dockerfile:1: FROM requires either one or three arguments/],
    ['FROM a AS 1x\n', /Dockerfile:1: invalid name for build stage/],
    ['RUN x\n', /Dockerfile:1: RUN before the first FROM/],
    ['ARG A\n', /Dockerfile:1: the Dockerfile has no FROM/],
    ['FROM a\nCOPY --frm=x a b\n', /Dockerfile:2: unknown flag: --frm for COPY/],
    ['FROM a\nENV A=1 B\n', /Dockerfile:2: Syntax error - can't find = in "B"/],
    ['FROM a\nSHELL /bin/sh\n', /Dockerfile:2: SHELL requires the arguments to be in JSON form/],
    ['FROM a\nHEALTHCHECK --interval=5x CMD true\n', /Dockerfile:2: --interval: time: invalid duration/],
    ['FROM a\nONBUILD ONBUILD RUN x\n', /Dockerfile:2: chaining ONBUILD/],
    ['FROM a\nWORKDIR\n', /Dockerfile:2: WORKDIR requires exactly one argument/],
    ['FROM a AS x\nFROM b AS x\n', /Dockerfile:2: duplicate stage name "x"/],
    ['FROM a\nRUN --network=bridge2 x\n', /Dockerfile:2: unsupported network mode/],
  ];
  for (const [text, re] of bad) {
    it(`rejects ${JSON.stringify(text.split('\n').filter(Boolean).pop())}`, () => {
      assert.throws(() => loadDockerfile(text), (e: unknown) => e instanceof DockerfileError && re.test(e.message));
    });
  }
});

describe('stage graph', () => {
  const text = [
    'ARG V=1',
    'FROM busybox AS base',
    'FROM base AS a',
    'FROM busybox AS b',
    'FROM scratch AS unused',
    'FROM base AS final',
    'COPY --from=a /x /x',
    'COPY --from=${SRC} /y /y',
    'RUN --mount=type=bind,from=b,target=/b true',
  ].join('\n');
  it('builds only what the target reaches, dependencies first', () => {
    const bf = loadDockerfile(text);
    const scope = resolveMetaArgs(bf, new Map([['SRC', 'b']]), new Map());
    scope.set('SRC', 'b');
    const deps = stageDeps(bf, scope);
    const order = reachableStages(bf, deps, targetStage(bf));
    assert.deepEqual(order.map((i) => bf.stages[i]!.name), ['base', 'a', 'b', 'final']);
    assert.deepEqual(reachableStages(bf, deps, targetStage(bf, 'a')).map((i) => bf.stages[i]!.name), ['base', 'a']);
  });
  it('rejects an unknown target', () => {
    const bf = loadDockerfile(text);
    assert.throws(() => targetStage(bf, 'nope'), /target stage "nope" could not be found/);
  });
  it('resolves meta args with build args overriding defaults', () => {
    const bf = loadDockerfile('ARG A=1\nARG B=${A}x\nARG C\nFROM $B\n');
    assert.deepEqual([...resolveMetaArgs(bf, new Map(), new Map())], [['A', '1'], ['B', '1x']]);
    assert.deepEqual([...resolveMetaArgs(bf, new Map([['A', '2'], ['C', 'c']]), new Map())], [['A', '2'], ['B', '2x'], ['C', 'c']]);
  });
});
