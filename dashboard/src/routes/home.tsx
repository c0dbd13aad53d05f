import { HomeView } from '@/features/quickstart/components/home-view';

export default function HomeRoute() {
  return <HomeView />;
}
