import { Link } from 'react-router-dom';
import { EmptyState } from '@/components/ui/states';

export default function NotFoundRoute() {
  return (
    <EmptyState title="Page not found" action={<Link to="/">Go to the overview</Link>}>
      There is nothing at this address.
    </EmptyState>
  );
}
