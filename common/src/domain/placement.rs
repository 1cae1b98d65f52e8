//! The placement questionnaire and the level it places a subscriber at.

/// The placement questionnaire: six yes/no questions, two per level. The level is one more than
/// the number of levels whose both questions were answered "yes", counting from level 1 and
/// stopping at the first level not mastered (capped at 3).
pub const QUESTIONS: [(&str, i16); 6] = [
    ("I can write a loop that prints the numbers 1 to 100.", 1),
    ("I can write a function that takes arguments and returns a value.", 1),
    ("I can use a hash map / dictionary to count things.", 2),
    ("I can read a file and process it line by line.", 2),
    ("I can explain the time complexity of my code (big-O).", 3),
    ("I can implement a data structure such as a linked list or a cache.", 3),
];

pub fn placement_level(answers: &[bool]) -> (i32, i16) {
    let score = answers.iter().filter(|a| **a).count() as i32;
    let mut level = 1;
    for mastered in 1..=2_i16 {
        let both = QUESTIONS.iter().zip(answers).filter(|((_, l), _)| *l == mastered).all(|(_, yes)| *yes);
        if both { level = mastered + 1 } else { break }
    }
    (score, level)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement() {
        assert_eq!(placement_level(&[false; 6]), (0, 1));
        assert_eq!(placement_level(&[true, true, false, false, false, false]), (2, 2));
        assert_eq!(placement_level(&[true, true, true, true, false, true]), (5, 3));
        assert_eq!(placement_level(&[true, false, true, true, true, true]), (5, 1), "level 1 not mastered");
    }
}
