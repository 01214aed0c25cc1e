/**
 * tscopy's copy engine commands (copy, inspect, sync).
 * Registration only: each action imports its implementation lazily.
 */
import type { Command } from 'commander';

export function registerCopyCommands(_p: Command): void {}
