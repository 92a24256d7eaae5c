using Broker.Client;
using Broker.IntegrationTests.Infrastructure;

namespace Broker.IntegrationTests;

public sealed class DiskTests
{
    [Fact]
    public async Task A_drained_topic_gives_its_disk_back()
    {
        // 1 MiB segments, so a few MiB of messages fill several files.
        await using var broker = await TestBroker.StartAsync(options =>
        {
            options.MaxMessageBytes = 64 * 1024;
            options.TopicSegmentSizeBits = 20;
            options.MaintenanceIntervalMs = 50;
        });
        var client = broker.Client;
        await client.CreateTopicAsync("items");
        await client.CreateGroupAsync("items", "writers");
        var payload = new byte[60 * 1024];
        for (int batch = 0; batch < 10; batch++)
            await client.PublishAsync("items", Enumerable.Range(0, 10).Select(_ => new OutgoingMessage(payload)));
        string logFolder = Path.Combine(broker.DataDirectory, "topics", "items", "log");
        int segmentsBefore = Segments(logFolder);
        ulong bytesBefore = (await client.DescribeTopicAsync("items")).LogBytes;
        Assert.True(segmentsBefore >= 5, $"only {segmentsBefore} segment files for 6 MB of messages");

        await using (var consumer = await client.SubscribeAsync("items", "writers", new SubscribeOptions { MaxInFlight = 1000 }))
        {
            var all = await Receive.ExactlyAsync(consumer, 100);
            Assert.Equal(100, (await consumer.AckAsync(all, default)).Accepted);
        }

        using var deadline = new CancellationTokenSource(Receive.Deadline);
        while (Segments(logFolder) > 2)
            await Task.Delay(50, deadline.Token);   // maintenance runs every 50 ms; wait for it to free the segments
        var description = await client.DescribeTopicAsync("items");
        Assert.True(description.LogBytes < bytesBefore / 4, $"log still spans {description.LogBytes} of {bytesBefore} bytes");
        Assert.Equal(100UL, description.FirstOffset);
        Assert.Equal(100UL, description.NextOffset);

        // The topic still works after truncation, and survives a restart with its files freed.
        await client.PublishAsync("items", [OutgoingMessage.FromText("after")]);
        await broker.RestartAsync();
        await using var again = await broker.Client.SubscribeAsync("items", "writers");
        Assert.Equal("after", (await Receive.ExactlyAsync(again, 1))[0].PayloadText);
    }

    [Fact]
    public async Task Deleting_a_lagging_group_frees_the_disk_it_pinned()
    {
        await using var broker = await TestBroker.StartAsync(options =>
        {
            options.MaxMessageBytes = 64 * 1024;
            options.TopicSegmentSizeBits = 20;
            options.MaintenanceIntervalMs = 50;
        });
        var client = broker.Client;
        await client.CreateTopicAsync("pinned");
        await client.CreateGroupAsync("pinned", "writers");
        await client.CreateGroupAsync("pinned", "abandoned");   // never consumed: it holds every message
        var payload = new byte[60 * 1024];
        for (int batch = 0; batch < 10; batch++)
            await client.PublishAsync("pinned", Enumerable.Range(0, 10).Select(_ => new OutgoingMessage(payload)));
        await using (var consumer = await client.SubscribeAsync("pinned", "writers", new SubscribeOptions { MaxInFlight = 1000 }))
            Assert.Equal(100, (await consumer.AckAsync(await Receive.ExactlyAsync(consumer, 100), default)).Accepted);
        string logFolder = Path.Combine(broker.DataDirectory, "topics", "pinned", "log");
        await Task.Delay(500);   // ten maintenance rounds: nothing may be freed while "abandoned" has acked nothing
        int pinnedSegments = Segments(logFolder);
        Assert.True(pinnedSegments >= 5, $"only {pinnedSegments} segment files kept for the lagging group");
        Assert.Equal(0UL, (await client.DescribeTopicAsync("pinned")).FirstOffset);

        await client.DeleteGroupAsync("pinned", "abandoned");

        using var deadline = new CancellationTokenSource(Receive.Deadline);
        while (Segments(logFolder) > 2)
            await Task.Delay(50, deadline.Token);   // maintenance frees what only the deleted group held
        var description = await client.DescribeTopicAsync("pinned");
        Assert.Equal(100UL, description.FirstOffset);
        Assert.True(description.LogBytes < (ulong)pinnedSegments * (1UL << 20) / 4, $"log still spans {description.LogBytes} bytes");
    }

    private static int Segments(string folder) => Directory.GetFiles(folder, "log.*").Length;
}
