import { useCallback, useEffect, useRef, useState } from 'react';
import { isAbortError } from './api';

export interface Resource<T> {
  data: T | undefined;
  error: unknown;
  /** True while loading with no data yet. */
  loading: boolean;
  /** True while any request is in flight (including background reloads). */
  fetching: boolean;
  reload: () => void;
  setData: (update: T | ((current: T | undefined) => T)) => void;
}

/**
 * Loads data with `fetcher` whenever `deps` change, keeping the previous data
 * on screen during reloads. Pass `enabled: false` to wait (e.g. no workspace yet).
 */
export function useResource<T>(
  fetcher: (signal: AbortSignal) => Promise<T>,
  deps: readonly unknown[],
  enabled = true,
): Resource<T> {
  const [data, setDataState] = useState<T | undefined>(undefined);
  const [error, setError] = useState<unknown>(undefined);
  const [fetching, setFetching] = useState(enabled);
  const [tick, setTick] = useState(0);
  const fetcherRef = useRef(fetcher);
  fetcherRef.current = fetcher;
  const depsKey = JSON.stringify(deps);
  const lastKey = useRef(depsKey);

  useEffect(() => {
    if (!enabled) {
      setFetching(false);
      return;
    }
    if (lastKey.current !== depsKey) {
      // Different inputs: do not show data that belongs to the old ones.
      lastKey.current = depsKey;
      setDataState(undefined);
    }
    const controller = new AbortController();
    setFetching(true);
    fetcherRef
      .current(controller.signal)
      .then((result) => {
        if (controller.signal.aborted) return;
        setDataState(result);
        setError(undefined);
      })
      .catch((err: unknown) => {
        if (controller.signal.aborted || isAbortError(err)) return;
        setError(err);
      })
      .finally(() => {
        if (!controller.signal.aborted) setFetching(false);
      });
    return () => controller.abort();
  }, [depsKey, tick, enabled]);

  const reload = useCallback(() => setTick((t) => t + 1), []);
  const setData = useCallback((update: T | ((current: T | undefined) => T)) => {
    setDataState((current) =>
      typeof update === 'function' ? (update as (c: T | undefined) => T)(current) : update,
    );
  }, []);

  return { data, error, loading: fetching && data === undefined, fetching, reload, setData };
}
