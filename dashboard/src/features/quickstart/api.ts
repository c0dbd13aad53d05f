import { api } from '@/lib/api';
import type { Meta } from './schema';

export function getMeta(signal?: AbortSignal) {
  return api.get<Meta>('/meta', { signal });
}
