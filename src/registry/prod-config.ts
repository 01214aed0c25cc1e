/**
 * Configuration sections of the production features (merged into CONFIG_SCHEMA by
 * config.ts). Structured sections are 'any' leaves validated here by their owners, so a bad
 * key is still named (`config auth.access.rules[0].actions[1]: unknown action "pul"`).
 *
 *   auth:                      # omit for an open registry
 *     htpasswd: /etc/tsregistry/htpasswd       # bcrypt (htpasswd -B); `tsregistry htpasswd` writes it
 *     realm: tsregistry                        # Basic realm
 *     token:                                   # Bearer tokens (Docker token spec); omit for Basic auth
 *       service: tsregistry                    # audience / service in challenges
 *       issuer: tsregistry
 *       key: /etc/tsregistry/token.pem         # EC P-256 (ES256) or RSA (RS256); default generated in <root>/auth
 *       expiration: 300                        # seconds
 *       realm: https://reg.example/token       # default: this server's /token
 *       builtin: true                          # false: only trust an external issuer:
 *       publicKeys: [/etc/tsregistry/issuer.pem]  # ...its PEM keys/certificates,
 *       jwks: /etc/tsregistry/jwks.json        # ...or a JWKS file,
 *       jwksUrl: https://sso.example/jwks.json # ...or a JWKS URL
 *     clientCertUsers: false                   # TLS client certificate CN = user (needs tls.clientCA)
 *     access:
 *       groups: { devs: [alice, bob] }
 *       rules:
 *         - { repos: ["team/**"], groups: [devs], actions: [pull, push] }
 *         - { repos: ["public/*"], anonymous: true, actions: [pull] }
 *         - { repos: ["**"], users: [admin], actions: ["*"] }
 *       catalog: { users: [admin] }
 *   tls: { cert: server.pem, key: server.key, clientCA: ca.pem, clientAuth: verify-if-given, minVersion: TLSv1.2 }
 *   log: { level: info, format: json, access: true, file: /var/log/tsregistry.log }
 *   metrics: { enabled: true }                  # GET /metrics (Prometheus), GET /healthz
 *   gc: { interval: 0s, gracePeriod: 1h, deleteUntagged: false }   # interval 0 = no schedule
 *   retention: [{ repos: ["ci/**"], keepLast: 20, olderThan: 30d, keep: ["latest", "v*"] }]
 *   immutable: [{ repos: ["prod/**"], tags: ["v*"] }]
 *   quota: [{ repos: ["team/**"], maxBytes: 10GiB }]
 *   mirror: see mirror/config.ts
 */
import type { SchemaNode } from './config.js';

export const PROD_SCHEMA: SchemaNode = {
  auth: { type: 'any', default: undefined, doc: 'access control: htpasswd, token (built-in or external issuer), access rules (see prod-config.ts)' },
  tls: { type: 'any', default: undefined, doc: 'TLS: {cert, key, clientCA?, clientAuth?, minVersion?}; reloaded on SIGHUP' },
  log: { type: 'any', default: undefined, doc: 'logging: {level, format: json|text, access: bool, file}' },
  metrics: {
    enabled: { type: 'bool', default: true, doc: 'serve GET /metrics (Prometheus text format) and GET /healthz' },
  },
  gc: {
    interval: { type: 'duration', default: 0, doc: 'run garbage collection (and retention) in the server this often (0 = never)' },
    gracePeriod: { type: 'duration', default: 3600_000, doc: 'blobs and untagged manifests younger than this are never collected' },
    deleteUntagged: { type: 'bool', default: false, doc: 'also delete manifests no tag, index or referrer reaches' },
  },
  retention: { type: 'any', default: undefined, doc: 'retention policies: [{repos, keepLast?, olderThan?, keep?}]' },
  immutable: { type: 'any', default: undefined, doc: 'immutable tags: [{repos, tags}] (overwrite and delete refused with DENIED)' },
  quota: { type: 'any', default: undefined, doc: 'storage quotas: [{repos, maxBytes}]' },
  mirror: { type: 'any', default: undefined, doc: 'pull-through mirror: {tagTtl, timeout, namespaces: [{prefix, upstreams: [{url, prefix, username, password|passwordFile, insecure}]}]} (see README)' },
};
