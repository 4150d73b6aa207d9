// Request body checks that name the bad field (400 invalid_field) instead of a generic 400.
import { GatewayError } from '../errors.js';

export type Json = Record<string, unknown>;

export function jsonObject(body: unknown, allowed: readonly string[]): Json {
  if (!body || typeof body !== 'object' || Array.isArray(body)) throw new GatewayError('bad_request', 'The body must be a JSON object.');
  for (const k of Object.keys(body)) {
    if (!allowed.includes(k)) throw new GatewayError('invalid_field', `Unknown field "${k}" (allowed: ${allowed.join(', ')}).`);
  }
  return body as Json;
}

export function requiredString(o: Json, field: string): string {
  const v = o[field];
  if (v === undefined || v === null) throw new GatewayError('invalid_field', `"${field}" is required.`);
  if (typeof v !== 'string') throw new GatewayError('invalid_field', `"${field}" must be a string.`);
  if (v.length === 0) throw new GatewayError('invalid_field', `"${field}" must not be empty.`);
  return v;
}

export function optionalEnum<T extends string>(o: Json, field: string, allowed: readonly T[]): T | undefined {
  const v = o[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string' || !(allowed as readonly string[]).includes(v)) throw new GatewayError('invalid_field', `"${field}" must be one of ${allowed.join(', ')}.`);
  return v as T;
}
