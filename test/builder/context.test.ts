/** Build context: .dockerignore matching (Docker's semantics), ignore file lookup, stat-cached hashing. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync, utimesSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../helpers.js';
import { BuildContext, goPatternRegExp, IgnoreMatcher, openContext, parseIgnoreText } from '../../src/builder/context.js';

function tree(dir: string, files: Record<string, string>): void {
  for (const [p, c] of Object.entries(files)) {
    mkdirSync(join(dir, p, '..'), { recursive: true });
    writeFileSync(join(dir, p), c);
  }
}

async function walked(ctx: BuildContext): Promise<string[]> {
  const out: string[] = [];
  for await (const e of ctx.walk('')) out.push(e.st.isDirectory() ? e.rel + '/' : e.rel);
  return out;
}

describe('dockerignore matching (Docker patternmatcher semantics)', () => {
  const cases: [string[], string, boolean][] = [
    [['dir'], 'dir/file', true], // a matched directory excludes its contents
    [['*.md', '!README.md'], 'README.md', false], // exception
    [['*.md', '!README.md'], 'CHANGES.md', true],
    [['!README.md', '*.md'], 'README.md', true], // last match wins
    [['**/*.go'], 'a/b/c.go', true], // ** spans directories
    [['**/*.go'], 'c.go', true], // ... including none
    [['a/**'], 'a', false], // a/** is what is below a, not a itself
    [['a/**'], 'a/x/y', true],
    [['dir/*', '!dir/keep'], 'dir/keep', false],
    [['dir', '!dir/keep'], 'dir/keep', false],
    [['/abs'], 'abs', true], // a leading / is the context root
    [['./x'], 'x', true],
    [['a/b/../c'], 'a/c', true], // cleaned
    [['*'], 'a/b', true],
    [['a?c'], 'abc', true],
    [['a?c'], 'a/c', false], // ? does not match /
    [['[a-c]x'], 'bx', true],
    [['[^a-c]x'], 'bx', false],
    [['*.tmp'], 'sub/x.tmp', false], // * stays in one directory level
  ];
  for (const [pats, path, want] of cases) {
    it(`${JSON.stringify(pats)} ${want ? 'excludes' : 'keeps'} ${path}`, () => {
      assert.equal(new IgnoreMatcher(parseIgnoreText(pats.join('\n'))).ignores(path), want);
    });
  }

  it('parses comments, blanks and whitespace as docker does', () => {
    assert.deepEqual(parseIgnoreText('# comment\n\n  node_modules  \n!  keep \n/x/\n./y\n'), ['node_modules', '!keep', 'x', 'y']);
  });

  it('Go filepath.Match patterns', () => {
    assert.ok(goPatternRegExp('*.js').test('a.js'));
    assert.ok(!goPatternRegExp('*.js').test('d/a.js'));
    assert.ok(goPatternRegExp('file\\*').test('file*'));
    assert.ok(!goPatternRegExp('file\\*').test('filex'));
    assert.ok(goPatternRegExp('[!]x').test('!x'));
    assert.throws(() => goPatternRegExp('[ab'), /unterminated/);
  });
});

describe('build context', () => {
  it('walks with .dockerignore: excluded dirs skipped, exceptions re-include below them', async (t) => {
    const d = tempDir(t, 'ctx');
    tree(d, {
      'app.js': '1',
      'node_modules/x/index.js': 'x',
      'logs/a.log': 'a',
      'logs/keep/important.log': 'i',
      'docs/a.md': 'a',
      'docs/README.md': 'r',
      Dockerfile: 'FROM scratch',
      '.dockerignore': 'node_modules\nlogs\n!logs/keep/important.log\n**/*.md\n!docs/README.md\nDockerfile\n.dockerignore\n',
    });
    const ctx = await openContext(d, { cacheDir: false });
    assert.equal(ctx.ignoreFile, join(d, '.dockerignore'));
    assert.deepEqual(await walked(ctx), ['app.js', 'docs/', 'docs/README.md', 'logs/', 'logs/keep/', 'logs/keep/important.log']);
    // the Dockerfile is excluded from COPY but still readable by the builder
    assert.ok(ctx.ignored('Dockerfile'));
    assert.equal(readFileSync(join(ctx.dir, 'Dockerfile'), 'utf8'), 'FROM scratch');
  });

  it('prefers <Dockerfile>.dockerignore beside the Dockerfile, then .containerignore, then .dockerignore', async (t) => {
    const d = tempDir(t, 'ctx');
    tree(d, { a: '', b: '', c: '', '.dockerignore': 'a\n', '.containerignore': 'b\n', 'build/Containerfile': 'FROM scratch', 'build/Containerfile.dockerignore': 'c\n' });
    const withDf = await openContext(d, { dockerfile: 'build/Containerfile', cacheDir: false });
    assert.equal(withDf.ignoreFile, join(d, 'build/Containerfile.dockerignore'));
    assert.deepEqual([withDf.ignored('a'), withDf.ignored('b'), withDf.ignored('c')], [false, false, true]);
    const plain = await openContext(d, { cacheDir: false });
    assert.equal(plain.ignoreFile, join(d, '.containerignore'));
    const explicit = await openContext(d, { ignoreFile: join(d, '.dockerignore'), cacheDir: false });
    assert.deepEqual([explicit.ignored('a'), explicit.ignored('b')], [true, false]);
    await assert.rejects(openContext(join(d, 'nope'), { cacheDir: false }), /build context .*nope: no such directory/);
  });

  it('hashes content through a persistent stat cache: unchanged files are not read again', async (t) => {
    const d = tempDir(t, 'ctx');
    const cache = tempDir(t, 'cache');
    tree(d, { 'a.txt': 'hello', 'b.txt': 'world', 'big.bin': 'x'.repeat(9 * 1024 * 1024) });
    symlinkSync('a.txt', join(d, 'link'));
    const c1 = await openContext(d, { cacheDir: cache });
    const h1 = await Promise.all(['a.txt', 'b.txt', 'big.bin'].map((f) => c1.hashFile(f)));
    assert.equal(c1.counters.filesRead, 3);
    assert.match(h1[0]!, /^x128:[0-9a-f]{32}$/);
    assert.match(h1[2]!, /^x64:[0-9a-f]{16}$/); // big files are streamed
    assert.notEqual(h1[0], h1[1]);
    await c1.save();
    assert.ok(existsSync(join(cache, 'statcache')));

    // a new build (new process state): nothing is read
    const c2 = await openContext(d, { cacheDir: cache });
    const h2 = await Promise.all(['a.txt', 'b.txt', 'big.bin'].map((f) => c2.hashFile(f)));
    assert.deepEqual(h2, h1);
    assert.equal(c2.counters.filesRead, 0);
    assert.equal(c2.counters.statHits, 3);

    // touching a file (same content) re-reads it once, same hash; changing content changes the hash
    const later = new Date(Date.now() + 5000);
    utimesSync(join(d, 'a.txt'), later, later);
    writeFileSync(join(d, 'b.txt'), 'WORLD');
    const c3 = await openContext(d, { cacheDir: cache });
    const h3 = await Promise.all(['a.txt', 'b.txt', 'big.bin'].map((f) => c3.hashFile(f)));
    assert.equal(c3.counters.filesRead, 2);
    assert.equal(h3[0], h1[0]);
    assert.notEqual(h3[1], h1[1]);
    assert.equal(h3[2], h1[2]);
    await c3.save();
    // rows of deleted files leave the stat cache
    const file = join(cache, 'statcache', readdirSync(join(cache, 'statcache'))[0]!);
    assert.equal(Object.keys(JSON.parse(readFileSync(file, 'utf8')).rows).length, 3);
    rmSync(join(d, 'b.txt'));
    const c4 = await openContext(d, { cacheDir: cache });
    await c4.hashFile('a.txt');
    await c4.save();
    assert.deepEqual(Object.keys(JSON.parse(readFileSync(file, 'utf8')).rows).sort(), [join(c4.dir, 'a.txt'), join(c4.dir, 'big.bin')]);
  });

  it('treeHash: one key for a context subtree, .dockerignore applied, stat-cached', async (t) => {
    const d = tempDir(t, 'ctx');
    const cache = tempDir(t, 'cache');
    tree(d, { 'src/a.go': 'a', 'src/b.go': 'b', 'src/tmp.log': 'x', '.dockerignore': '**/*.log\n' });
    const c1 = await openContext(d, { cacheDir: cache });
    const h1 = await c1.treeHash('src');
    await c1.save();
    writeFileSync(join(d, 'src/tmp.log'), 'changed'); // ignored: same hash
    const c2 = await openContext(d, { cacheDir: cache });
    assert.equal(await c2.treeHash('/src'), h1);
    assert.equal(c2.counters.filesRead, 0);
    writeFileSync(join(d, 'src/b.go'), 'B');
    const c3 = await openContext(d, { cacheDir: cache });
    assert.notEqual(await c3.treeHash('src'), h1);
    assert.match(h1, /^sha256:[0-9a-f]{64}$/);
    await assert.rejects(c3.treeHash('src/tmp.log'), /excluded by \.dockerignore/);
    await assert.rejects(c3.treeHash('nope'), /nope: no such file or directory in the build context/);
  });

  it('refuses paths outside the context', async (t) => {
    const d = tempDir(t, 'ctx');
    const ctx = await openContext(d, { cacheDir: false });
    assert.throws(() => ctx.abs('../etc/passwd'), /outside the build context/);
  });
});
