using Broker.Storage.Groups;

namespace Broker.Storage.Tests;

public sealed class ConsumerGroupStateTests
{
    private const long Lease = 30;
    private static readonly Moment Start = new(Timestamp: 1_000, UnixMs: 1_700_000_000_000);

    // Entries 100 bytes apart: offset n lives at address 1000 + 100n.
    private static MessageLocation At(long offset) => new(offset, 1000 + 100 * offset, 1000 + 100 * (offset + 1));

    private static Moment After(long ticks) => new(Start.Timestamp + ticks, Start.UnixMs + ticks);

    private static ConsumerGroupState NewState(int maxDeliveries = 5) => new(0, At(0).Address, [], firstToken: 10, maxDeliveries);

    [Fact]
    public void The_floor_moves_only_over_a_contiguous_run_of_acks()
    {
        var state = NewState();
        var delivered = Enumerable.Range(0, 4).Select(i => state.Deliver(At(i), consumerId: 1, null, Start, Lease)).ToList();

        Assert.Equal(SettleOutcome.Done, state.Acknowledge(1, delivered[1].Token, Start, out _));
        Assert.Equal(SettleOutcome.Done, state.Acknowledge(2, delivered[2].Token, Start, out _));
        Assert.Equal(0, state.AckFloor);
        Assert.Equal(SettleOutcome.Done, state.Acknowledge(0, delivered[0].Token, Start, out _));
        Assert.Equal(3, state.AckFloor);
        Assert.Equal(At(3).Address, state.FloorAddress);
        Assert.Equal(1, state.InFlightCount);
        Assert.Equal(0, state.AcknowledgedAboveFloorCount);
    }

    [Fact]
    public void A_wrong_token_or_a_second_ack_is_stale_and_an_undelivered_offset_is_unknown()
    {
        var state = NewState();
        var message = state.Deliver(At(0), consumerId: 1, null, Start, Lease);

        Assert.Equal(SettleOutcome.Stale, state.Acknowledge(0, message.Token + 1, Start, out _));
        Assert.Equal(SettleOutcome.Done, state.Acknowledge(0, message.Token, Start, out int consumer));
        Assert.Equal(1, consumer);
        Assert.Equal(SettleOutcome.Stale, state.Acknowledge(0, message.Token, Start, out _));
        Assert.Equal(SettleOutcome.Unknown, state.Acknowledge(5, message.Token, Start, out _));
    }

    [Fact]
    public void Releasing_a_consumer_makes_its_messages_visible_again_with_their_attempts()
    {
        var state = NewState();
        var first = state.Deliver(At(0), consumerId: 1, null, Start, Lease);
        state.Deliver(At(1), consumerId: 2, null, Start, Lease);
        state.Deliver(At(2), consumerId: 1, null, Start, Lease);

        Assert.Equal(2, state.ReleaseConsumer(1, Start));
        Assert.Equal(0, state.InFlightOf(1));
        Assert.Equal(1, state.InFlightOf(2));
        Assert.Equal(SettleOutcome.Stale, state.Acknowledge(0, first.Token, Start, out _));
        Assert.True(state.TryTakeVisibleAgain(out var waiting));
        Assert.Equal(0, waiting.Location.Offset);
        Assert.Equal(1, waiting.Attempts);
        var again = state.Deliver(waiting.Location, consumerId: 3, waiting, Start, Lease);
        Assert.Equal(2, again.Attempt);
        Assert.NotEqual(first.Token, again.Token);
        Assert.True(state.TryTakeVisibleAgain(out waiting));
        Assert.Equal(2, waiting.Location.Offset);
        Assert.False(state.TryTakeVisibleAgain(out _));
        Assert.Equal(1, state.RedeliveredTotal);
    }

    [Fact]
    public void A_lease_expires_at_its_deadline_and_not_before()
    {
        var state = NewState();
        var message = state.Deliver(At(0), consumerId: 7, null, Start, Lease);
        var credit = new HashSet<int>();

        Assert.False(state.ExpireDue(After(Lease - 1), credit));
        Assert.Equal(1, state.InFlightCount);
        Assert.True(state.ExpireDue(After(Lease), credit));
        Assert.Equal([7], credit);
        Assert.Equal(0, state.InFlightOf(7));
        Assert.Equal(SettleOutcome.Stale, state.Acknowledge(0, message.Token, Start, out _));
        Assert.True(state.TryTakeVisibleAgain(out var waiting));
        Assert.Equal(1, waiting.Attempts);
    }

    [Fact]
    public void Extend_moves_the_deadline_and_needs_the_current_token()
    {
        var state = NewState();
        var message = state.Deliver(At(0), consumerId: 1, null, Start, Lease);

        Assert.Equal(SettleOutcome.Stale, state.Extend(0, message.Token + 1, Lease, After(20)));
        Assert.Equal(SettleOutcome.Done, state.Extend(0, message.Token, Lease, After(20)));
        // The original deadline (30) passes without effect; the extended one (20 + 30) expires the lease.
        Assert.False(state.ExpireDue(After(Lease + 5), new HashSet<int>()));
        Assert.Equal(1, state.InFlightCount);
        Assert.Equal(Start.Timestamp + 20 + Lease, state.NextDue);
        Assert.True(state.ExpireDue(After(20 + Lease), new HashSet<int>()));
        Assert.Equal(0, state.InFlightCount);
    }

    [Fact]
    public void A_nack_with_a_delay_keeps_the_message_invisible_until_the_delay_is_over()
    {
        var state = NewState();
        var message = state.Deliver(At(0), consumerId: 1, null, Start, Lease);

        Assert.Equal(SettleOutcome.Done, state.Nack(0, message.Token, delay: 100, "boom", Start, out _));
        Assert.False(state.TryTakeVisibleAgain(out _));
        Assert.Equal(1, state.DelayedCount);
        Assert.Equal(SettleOutcome.Stale, state.Nack(0, message.Token, 0, null, Start, out _));
        Assert.False(state.ExpireDue(After(99), new HashSet<int>()));
        Assert.True(state.ExpireDue(After(100), new HashSet<int>()));
        Assert.True(state.TryTakeVisibleAgain(out var waiting));
        Assert.Equal("boom", waiting.LastError);
    }

    [Fact]
    public void The_retry_backoff_grows_per_failed_delivery_up_to_its_maximum_and_jitter_only_shortens_it()
    {
        var backoff = new RetryBackoff(TimeSpan.FromSeconds(1), TimeSpan.FromMinutes(10), Multiplier: 2, Jitter: 0.2);

        Assert.Equal([1, 2, 4, 8, 16], Enumerable.Range(1, 5).Select(attempt => backoff.DelayAfter(attempt, random: 0).TotalSeconds));
        Assert.Equal(512, backoff.DelayAfter(10, 0).TotalSeconds);
        Assert.Equal(600, backoff.DelayAfter(11, 0).TotalSeconds);
        // A huge attempt count neither overflows nor passes the maximum.
        Assert.Equal(600, backoff.DelayAfter(int.MaxValue, 0).TotalSeconds);
        // Jitter 0.2: the wait is drawn from [80 %, 100 %] of the schedule.
        Assert.Equal(3.2, backoff.DelayAfter(3, random: 0.999_999_999).TotalSeconds, precision: 3);
        Assert.Equal(3.6, backoff.DelayAfter(3, random: 0.5).TotalSeconds, precision: 3);
    }

    [Theory]
    [InlineData(0, 1000, 2, 0, "initial")]
    [InlineData(1000, 999, 2, 0, "maximum")]
    [InlineData(1000, 50_000_000, 2, 0, "maximum")]
    [InlineData(1000, 2000, 0.5, 0, "multiplier")]
    [InlineData(1000, 2000, 11, 0, "multiplier")]
    [InlineData(1000, 2000, 2, 1.5, "jitter")]
    [InlineData(1000, 2000, 2, double.NaN, "jitter")]
    public void A_retry_backoff_out_of_range_is_refused_naming_what_is_wrong(long initialMs, long maxMs, double multiplier, double jitter, string named)
    {
        var policy = GroupPolicy.Default with
        {
            RetryBackoff = new RetryBackoff(TimeSpan.FromMilliseconds(initialMs), TimeSpan.FromMilliseconds(maxMs), multiplier, jitter),
        };
        var problem = policy.ResolvedFor("jobs").Validate("jobs");
        Assert.NotNull(problem);
        Assert.Contains(named, problem.Value.Message);
        Assert.Null((GroupPolicy.Default with { RetryBackoff = new RetryBackoff(TimeSpan.FromSeconds(1), TimeSpan.FromHours(12), 10, 1) })
            .ResolvedFor("jobs").Validate("jobs"));
    }

    [Fact]
    public void With_a_retry_backoff_a_nack_without_delay_and_an_expired_lease_wait_their_turn_and_a_nack_with_delay_keeps_its_own()
    {
        // Ticks are milliseconds here; a 10 ms backoff doubling to 40 ms, no jitter.
        var backoff = new RetryBackoff(TimeSpan.FromMilliseconds(10), TimeSpan.FromMilliseconds(40));
        var state = new ConsumerGroupState(0, At(0).Address, [], firstToken: 10, maxDeliveries: 10, timestampFrequency: 1000, retryBackoff: backoff);

        // Attempt 1 nacked without a delay: 10 ms.
        var first = state.Deliver(At(0), consumerId: 1, null, Start, Lease);
        Assert.Equal(SettleOutcome.Done, state.Nack(0, first.Token, delay: 0, "boom", Start, out _));
        Assert.False(state.TryTakeVisibleAgain(out _));
        Assert.False(state.ExpireDue(After(9), new HashSet<int>()));
        Assert.True(state.ExpireDue(After(10), new HashSet<int>()));
        Assert.True(state.TryTakeVisibleAgain(out var waiting));

        // Attempt 2's lease runs out at 10 + 30: then 20 ms, reported as a delay the restart must keep.
        var second = state.Deliver(At(0), consumerId: 1, waiting, After(10), Lease);
        var delayed = new List<long>();
        Assert.True(state.ExpireDue(After(40), new HashSet<int>(), delayed));
        Assert.Equal([0L], delayed);
        Assert.Equal(SettleTimerKind.Delayed, state.TimerOf(0, After(40)).Kind);
        Assert.Equal(After(60).UnixMs, state.TimerOf(0, After(40)).UnixMs);
        Assert.False(state.ExpireDue(After(59), new HashSet<int>()));
        Assert.True(state.ExpireDue(After(60), new HashSet<int>()));
        Assert.True(state.TryTakeVisibleAgain(out waiting));

        // Attempt 3 nacked with a delay of its own: the consumer's delay wins over the schedule (40 ms).
        var third = state.Deliver(At(0), consumerId: 1, waiting, After(60), Lease);
        Assert.Equal(3, third.Attempt);
        Assert.Equal(SettleOutcome.Done, state.Nack(0, third.Token, delay: 5, null, After(60), out _));
        Assert.True(state.ExpireDue(After(65), new HashSet<int>()));
        Assert.True(state.TryTakeVisibleAgain(out waiting));

        // Attempt 4 nacked without a delay: capped at 40 ms (the schedule says 80).
        var fourth = state.Deliver(At(0), consumerId: 1, waiting, After(65), Lease);
        Assert.Equal(SettleOutcome.Done, state.Nack(0, fourth.Token, delay: 0, null, After(65), out _));
        Assert.False(state.ExpireDue(After(104), new HashSet<int>()));
        Assert.True(state.ExpireDue(After(105), new HashSet<int>()));
        Assert.Null(state.CheckInvariants());
    }

    [Fact]
    public void Ordered_by_key_one_message_per_key_is_out_at_a_time_and_the_next_follows_an_ack_or_a_dead_letter()
    {
        const ulong A = 1, B = 2;
        var state = new ConsumerGroupState(0, At(0).Address, [], firstToken: 10, maxDeliveries: 5, orderedByKey: true);

        // The reader meets A0, A1, B2, A3: A0 and B2 go out, A1 and A3 wait behind A0.
        Assert.True(state.TryTakeTurn(At(0), A));
        var a0 = state.Deliver(At(0), consumerId: 1, null, Start, Lease);
        Assert.False(state.TryTakeTurn(At(1), A));
        Assert.True(state.TryTakeTurn(At(2), B));
        state.Deliver(At(2), consumerId: 2, null, Start, Lease);
        Assert.False(state.TryTakeTurn(At(3), A));
        Assert.Equal(2, state.WaitingForTurnCount);
        Assert.Null(state.CheckInvariants());

        // A0 fails and comes back: it keeps the turn, A1 still waits.
        Assert.Equal(SettleOutcome.Done, state.Nack(0, a0.Token, 0, "boom", Start, out _));
        Assert.False(state.TakeTurnPassed());
        Assert.True(state.TryTakeVisibleAgain(out var again));
        Assert.Equal(0, again.Location.Offset);
        var a0Again = state.Deliver(again.Location, consumerId: 2, again, Start, Lease);

        // A0 acked: the turn passes to A1, now visible as a first delivery; A3 still waits.
        Assert.Equal(SettleOutcome.Done, state.Acknowledge(0, a0Again.Token, Start, out _));
        Assert.True(state.TakeTurnPassed());
        Assert.True(state.TryTakeVisibleAgain(out var next));
        Assert.Equal(1, next.Location.Offset);
        var a1 = state.Deliver(next.Location, consumerId: 1, next, Start, Lease);
        Assert.Equal(1, a1.Attempt);
        Assert.False(state.TryTakeVisibleAgain(out _));
        Assert.Null(state.CheckInvariants());

        // A1 dead-lettered: the turn passes only once the letter is durable.
        Assert.Equal(SettleOutcome.Done, state.DeadLetterNow(1, a1.Token, "bad", null, out _));
        Assert.False(state.TryTakeVisibleAgain(out _));
        Assert.True(state.TryTakeDeadLetter(out var letter));
        state.CompleteDeadLetter(letter.Message.Location.Offset, Start);
        Assert.True(state.TryTakeVisibleAgain(out next));
        Assert.Equal(3, next.Location.Offset);
        state.Deliver(next.Location, consumerId: 1, next, Start, Lease);
        Assert.Equal(0, state.WaitingForTurnCount);
        Assert.Null(state.CheckInvariants());
    }

    [Fact]
    public void Ready_messages_go_out_highest_priority_first_but_every_tenth_delivery_is_the_oldest_ready_one()
    {
        var ready = new ReadyMessages(levels: 10, newestFirst: false);
        for (int i = 0; i < 3; i++)
            ready.Add(At(i), priority: 0);
        for (int i = 3; i < 15; i++)
            ready.Add(At(i), priority: i < 9 ? 200 : 5);   // 200 counts as the top level (9)
        var order = new List<long>();
        while (ready.TryTake(out var location))
            order.Add(location.Offset);

        Assert.Equal([3L, 4, 5, 6, 7, 8, 9, 10, 11, 0, 12, 13, 14, 1, 2], order);
    }

    [Fact]
    public void A_newest_first_group_hands_out_the_last_read_message_first_and_delivers_it_as_a_first_attempt()
    {
        var state = new ConsumerGroupState(0, At(0).Address, [], firstToken: 10, maxDeliveries: 5, newestFirst: true);
        foreach (int i in Enumerable.Range(0, 4))
            state.AddReady(At(i), 0);
        Assert.Null(state.CheckInvariants());

        var order = new List<long>();
        while (state.TryTakeVisibleAgain(out var waiting))
        {
            var delivered = state.Deliver(waiting.Location, consumerId: 1, waiting, Start, Lease);
            Assert.Equal(1, delivered.Attempt);
            order.Add(delivered.Location.Offset);
        }
        Assert.Equal([3L, 2, 1, 0], order);
        Assert.Equal(0, state.RedeliveredTotal);
        Assert.Null(state.CheckInvariants());
    }

    [Fact]
    public void A_message_out_of_deliveries_becomes_a_dead_letter_and_then_counts_as_done()
    {
        var state = NewState(maxDeliveries: 2);
        var first = state.Deliver(At(0), consumerId: 1, null, Start, Lease);
        Assert.Equal(SettleOutcome.Done, state.Nack(0, first.Token, 0, "first", Start, out _));
        Assert.True(state.TryTakeVisibleAgain(out var waiting));
        var second = state.Deliver(At(0), consumerId: 1, waiting, After(1), Lease);
        Assert.Equal(2, second.Attempt);

        Assert.Equal(SettleOutcome.Done, state.Nack(0, second.Token, 0, "second", After(2), out _));

        Assert.False(state.TryTakeVisibleAgain(out _));
        Assert.True(state.TryTakeDeadLetter(out var deadLetter));
        Assert.Equal(2, deadLetter.Message.Attempts);
        Assert.Equal("second", deadLetter.Message.LastError);
        Assert.Equal(Start.UnixMs, deadLetter.Message.FirstDeliveredUnixMs);
        Assert.Equal(After(1).UnixMs, deadLetter.Message.LastDeliveredUnixMs);
        Assert.Contains("max deliveries (2)", deadLetter.Reason);
        Assert.Equal(0, state.AckFloor);
        state.CompleteDeadLetter(0, Start);
        Assert.Equal(1, state.AckFloor);
        Assert.Equal(1, state.DeadLetteredTotal);
    }

    [Fact]
    public void A_release_does_not_count_as_a_delivery()
    {
        var state = NewState(maxDeliveries: 1);
        var message = state.Deliver(At(0), consumerId: 1, null, Start, Lease);

        Assert.Equal(SettleOutcome.Done, state.Release(0, message.Token, out _));

        Assert.False(state.TryTakeDeadLetter(out _));
        Assert.True(state.TryTakeVisibleAgain(out var waiting));
        Assert.Equal(0, waiting.Attempts);
        Assert.Equal(1, state.Deliver(At(0), consumerId: 2, waiting, Start, Lease).Attempt);
    }

    [Fact]
    public void A_dead_letter_nack_goes_out_at_once_with_its_reason()
    {
        var state = NewState();
        var message = state.Deliver(At(3), consumerId: 1, null, Start, Lease);

        Assert.Equal(SettleOutcome.Done, state.DeadLetterNow(3, message.Token, "bad json", "line 1", out _));

        Assert.True(state.TryTakeDeadLetter(out var deadLetter));
        Assert.Equal("bad json", deadLetter.Reason);
        Assert.Equal("line 1", deadLetter.Message.LastError);
        Assert.Equal(SettleOutcome.Stale, state.Acknowledge(3, message.Token, Start, out _));
    }

    [Fact]
    public void After_a_restore_the_floor_waits_until_the_reader_has_seen_acknowledged_offsets()
    {
        // Restored: floor 0, offsets 1 and 2 acknowledged earlier, their addresses unknown until the reader passes.
        var state = new ConsumerGroupState(0, At(0).Address, [1, 2], firstToken: 10, maxDeliveries: 5);
        Assert.True(state.IsAcknowledged(1));
        var zero = state.Deliver(At(0), consumerId: 1, null, Start, Lease);
        Assert.Equal(SettleOutcome.Done, state.Acknowledge(0, zero.Token, Start, out _));
        Assert.Equal(1, state.AckFloor);

        state.NoteAcknowledgedLocation(1, At(1).NextAddress);
        state.NoteAcknowledgedLocation(2, At(2).NextAddress);
        Assert.Equal(3, state.AckFloor);
        Assert.Equal(At(3).Address, state.FloorAddress);
    }
}
