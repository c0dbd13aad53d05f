import type { ReactNode } from 'react';
import type { Tone } from '@/lib/format';

export function Badge({ tone = 'neutral', children, title }: { tone?: Tone | 'info'; children: ReactNode; title?: string }) {
  return (
    <span className={`badge badge-${tone}`} title={title}>
      {children}
    </span>
  );
}
