/** A tiny store behind the toaster: the one place that shows server errors. */

export type ToastKind = 'error' | 'success' | 'info';

export interface Toast {
  id: number;
  kind: ToastKind;
  message: string;
}

type Listener = (toasts: Toast[]) => void;

let toasts: Toast[] = [];
let nextId = 1;
const listeners = new Set<Listener>();
const timers = new Map<number, ReturnType<typeof setTimeout>>();

const DURATION: Record<ToastKind, number> = { error: 8000, success: 4000, info: 5000 };

function emit() {
  for (const listener of listeners) listener(toasts);
}

export function subscribe(listener: Listener): () => void {
  listeners.add(listener);
  listener(toasts);
  return () => listeners.delete(listener);
}

export function getToasts(): Toast[] {
  return toasts;
}

export function notify(kind: ToastKind, message: string): number {
  // The same message already on screen is not repeated (e.g. during auto-refresh).
  const existing = toasts.find((t) => t.kind === kind && t.message === message);
  if (existing) {
    schedule(existing.id, kind);
    return existing.id;
  }
  const toast: Toast = { id: nextId++, kind, message };
  toasts = [...toasts.slice(-4), toast];
  schedule(toast.id, kind);
  emit();
  return toast.id;
}

function schedule(id: number, kind: ToastKind) {
  const previous = timers.get(id);
  if (previous) clearTimeout(previous);
  timers.set(
    id,
    setTimeout(() => dismiss(id), DURATION[kind]),
  );
}

export function dismiss(id: number): void {
  const timer = timers.get(id);
  if (timer) clearTimeout(timer);
  timers.delete(id);
  const before = toasts.length;
  toasts = toasts.filter((t) => t.id !== id);
  if (toasts.length !== before) emit();
}

export function clearToasts(): void {
  for (const timer of timers.values()) clearTimeout(timer);
  timers.clear();
  toasts = [];
  emit();
}

export const toast = {
  error: (message: string) => notify('error', message),
  success: (message: string) => notify('success', message),
  info: (message: string) => notify('info', message),
};
