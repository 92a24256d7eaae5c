using Broker.Client;
using Broker.IntegrationTests.Infrastructure;

namespace Broker.IntegrationTests;

/// <summary>
/// Nack delays and extended leases survive SIGKILL (a Celery <c>retry(countdown=600)</c>, a worker mid-way through a
/// long job). Invariant: after the restart the delayed message is not delivered before its time, the extended lease
/// stays with its token (the worker's ack after the restart holds), and everything else is delivered again as usual.
/// </summary>
public sealed class SettleTimerCrashTests
{
    [Fact]
    public async Task A_delayed_nack_and_an_extended_lease_outlive_a_sigkill()
    {
        string data = TestBroker.NewDataDirectory();
        try
        {
            ulong leasedToken;
            // 1. Three deliveries: offset 0 nacked for ten minutes, offset 1 extended for an hour, offset 2 acked. The
            //    ack's commit covers the timers appended before it. Then SIGKILL.
            using (var broker = await BrokerProcess.StartAsync(data))
            using (var client = new BrokerClient(broker.Address))
            {
                await client.CreateTopicAsync("jobs");
                await client.PublishAsync("jobs", Enumerable.Range(0, 3).Select(i => OutgoingMessage.FromText($"job {i}")));
                await using var subscription = await client.SubscribeAsync("jobs", "workers");
                var received = await Receive.ExactlyAsync(subscription, 3);
                Assert.Equal(1, (await subscription.NackAsync([received[0]], TimeSpan.FromMinutes(10), "database down")).Accepted);
                Assert.Equal(1, (await subscription.ExtendAsync([received[1]], TimeSpan.FromHours(1))).Accepted);
                Assert.Equal(1, (await subscription.AckAsync(received[2])).Accepted);
                leasedToken = received[1].Token;
                broker.Kill();
            }

            // 2. Restart. A new message is delivered; offsets 0 and 1 are not: the reader passed them and held them.
            using (var broker = await BrokerProcess.StartAsync(data))
            using (var client = new BrokerClient(broker.Address))
            {
                await using var subscription = await client.SubscribeAsync("jobs", "workers");
                await client.PublishAsync("jobs", [OutgoingMessage.FromText("job 3")]);
                var next = Assert.Single(await Receive.ExactlyAsync(subscription, 1));
                Assert.Equal(3, next.Offset);
                await Receive.NothingMoreAsync(subscription);
                var group = (await client.DescribeTopicAsync("jobs")).Groups.Single();
                Assert.Equal(1ul, group.Delayed);
                Assert.Equal(2ul, group.InFlight);   // offset 1 (held for the worker from before) and offset 3

                // 3. The worker that held offset 1 finishes after the restart: its ack, with the old token, holds.
                var ack = await subscription.AckAsync([(1L, leasedToken)]);
                Assert.Equal(1, ack.Accepted);
                Assert.Empty(ack.Refused);
                Assert.Equal(1, (await subscription.AckAsync(next)).Accepted);
                group = (await client.DescribeTopicAsync("jobs")).Groups.Single();
                Assert.Equal(1ul, group.Backlog);   // only the delayed offset 0 is left
                Assert.Equal(0ul, group.InFlight);
            }
        }
        finally
        {
            try
            {
                Directory.Delete(data, recursive: true);
            }
            catch (IOException)
            {
            }
        }
    }
}
